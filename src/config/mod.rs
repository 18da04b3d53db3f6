//! The config file: a TOML schedule edited by hand.
//!
//! Two stages, as the file is read: [`toml::de::DeTable`] keeps every key and value with its
//! span, then [`parse_str`] builds the validated domain types ([`Config`], [`Job`]) in one
//! place, collecting every error with its position instead of stopping at the first. File I/O
//! is kept apart ([`load`]) so tests validate strings without touching the disk.

pub mod diag;
pub mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use toml::de::{DeTable, DeValue};

use std::collections::HashMap;

use self::diag::{ConfigErrors, Diagnostic, Diags, hint};
use self::table::{Str, Table, type_name};
use crate::job::{Job, NotifyOn};
use crate::jobs::{ACTIONS, Action, ParseContext};
use crate::notifications::{self, Notifier};
use crate::policy::Policy;
use crate::schedule::{CronSchedule, Interval, Schedule, cron};

/// Configs larger than this are refused before parsing: a schedule of 50 000 jobs fits.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file as the user named it (for messages).
    pub path: PathBuf,
    /// Every file read: the main one, then the drop-ins in the order they were merged.
    pub files: Vec<PathBuf>,
    pub scheduler: SchedulerConfig,
    pub jobs: Vec<Job>,
    pub notifiers: HashMap<String, Notifier>,
    /// `[brokers.NAME]`: where queue jobs send messages.
    pub brokers: crate::broker::BrokerConfigs,
    /// `[api]`: absent means no HTTP API.
    pub api: Option<ApiConfig>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: Listen,
    /// The bearer token mutations need; without it, beatd makes one in the state folder
    /// ([`crate::api::auth::TOKEN_FILE`]) at its first start.
    pub token_file: Option<PathBuf>,
    /// Mutations need no token (beatd warns at every start).
    pub allow_unauthenticated: bool,
    /// `Host` names accepted besides the listen address, loopback names and IP addresses.
    pub allowed_hosts: Vec<String>,
    /// `false` drops the `job` label from metrics, for very large schedules.
    pub per_job_metrics: bool,
    /// At most this many connections at once (and never more than half the descriptor limit).
    pub max_connections: usize,
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    /// `unix:/run/beatd/api.sock`: the socket's permissions decide who may use it.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "http://{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl ApiConfig {
    /// The address a client on this machine uses (a wildcard listen address means loopback).
    pub fn client_base(&self) -> String {
        match &self.listen {
            Listen::Tcp(listen) => {
                let mut addr = *listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(if addr.is_ipv4() {
                        [127, 0, 0, 1].into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                format!("http://{addr}")
            }
            Listen::Unix(_) => "http://localhost".into(),
        }
    }

    /// Where the token is: `token_file`, else the one beatd makes in `state_dir`.
    pub fn token_path(&self, state_dir: &Path) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| state_dir.join(crate::api::auth::TOKEN_FILE))
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Default zone for cron jobs.
    pub timezone: Tz,
    /// Where the embedded state lives; relative to the config file's folder.
    pub state_dir: PathBuf,
    /// How long running jobs get to finish on shutdown before they are killed.
    pub shutdown_grace: Duration,
    /// At most this many runs at once, across all jobs; fires over the cap wait.
    pub max_running: Option<usize>,
    /// Run history older than this is deleted.
    pub history_keep: Duration,
    /// Drop-in files merged into this one: glob patterns, relative to the config's folder.
    pub include: Vec<String>,
    /// At most this many queue messages wait in the outbox; past it the oldest are dropped.
    pub max_outbox: u64,
}

impl SchedulerConfig {
    fn defaults(base: &Path) -> Self {
        SchedulerConfig {
            timezone: system_zone(),
            state_dir: base.join("state"),
            shutdown_grace: Duration::from_secs(30),
            max_running: None,
            history_keep: Duration::from_secs(30 * 86_400),
            include: Vec::new(),
            max_outbox: 100_000,
        }
    }
}

/// A file read for the config: the main file, or a drop-in named by `include`.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Reads and validates a config file and the drop-ins its `include` names, and checks what
/// it names on disk: the config to run with.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, Disk::Check)
}

/// Reads and validates a config file and its drop-ins without checking what it names on disk:
/// for commands that only need its settings (`history`, `status`, `trigger`, `next`).
pub fn read(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, Disk::Skip)
}

fn load_with(path: &Path, disk: Disk) -> Result<Config, ConfigErrors> {
    let main = read_source(path)?;
    let base = folder_of(path);
    // The drop-ins are found first, so that every file's jobs are validated together: a job
    // may name a notifier of another file, and a name defined twice is caught.
    let mut dropins = Vec::new();
    let mut errors = Vec::new();
    // Patterns the parse refuses (absolute, or climbing out with "..") are not read at all.
    let patterns = include_patterns(&main.text);
    for pattern in patterns.iter().filter(|p| !Path::new(p).is_absolute() && !p.split('/').any(|c| c == "..")) {
        match expand_include(&base, pattern) {
            Ok(paths) => {
                for p in paths {
                    match read_source(&p) {
                        Ok(s) => dropins.push(s),
                        Err(e) => errors.extend(e.0),
                    }
                }
            }
            Err(e) => {
                errors.push(Diagnostic { file: path.display().to_string(), position: None, job: None, message: e })
            }
        }
    }
    match parse_sources(&main, &dropins, &base, disk) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(mut e) => {
            e.0.extend(errors);
            Err(e)
        }
    }
}

/// The folder a config's relative paths start from: its own (`.` for a bare file name).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn read_source(path: &Path) -> Result<Source, ConfigErrors> {
    let shown = path.display().to_string();
    let bytes = read_limited(path).map_err(|m| ConfigErrors::whole_file(&shown, m))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Source { path: path.to_path_buf(), text }),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            let mut d = Diags::new(&shown, &prefix);
            d.error(valid..valid, None, "invalid UTF-8: a config must be UTF-8 text");
            Err(d.finish().expect_err("one error was added"))
        }
    }
}

/// `[scheduler] include` of a config text, read leniently: the full parse reports its errors.
fn include_patterns(text: &str) -> Vec<String> {
    let Ok(root) = DeTable::parse(text) else { return Vec::new() };
    let Some(include) = root.get_ref().get("scheduler").and_then(|s| s.get_ref().get("include")) else {
        return Vec::new();
    };
    match include.get_ref() {
        DeValue::String(s) => vec![s.to_string()],
        DeValue::Array(items) => items.iter().filter_map(|i| i.get_ref().as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// The files an `include` pattern names, sorted. A pattern whose folder does not exist is an
/// error (a typo would otherwise include nothing, silently); a folder with no match is not.
pub fn expand_include(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = resolve(base, pattern);
    let text = full.to_str().ok_or_else(|| format!("include \"{pattern}\": the path is not UTF-8"))?;
    let paths = glob::glob(text).map_err(|e| format!("include \"{pattern}\": invalid pattern: {}", e.msg))?;
    let mut out: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| !p.is_dir()).collect();
    out.sort();
    if out.is_empty() {
        let folder = include_folder(base, pattern);
        if !folder.is_dir() {
            return Err(format!("include \"{pattern}\": no folder {}", folder.display()));
        }
        if !glob_chars(pattern) {
            return Err(format!("include \"{pattern}\": no file {}", full.display()));
        }
    }
    Ok(out)
}

/// A path (or include pattern) of the config, relative to the config's folder `base`; with a
/// config in the current folder it stays as written.
pub fn resolve(base: &Path, pattern: &str) -> PathBuf {
    if base == Path::new(".") { PathBuf::from(pattern) } else { base.join(pattern) }
}

fn glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The folder of an include pattern: its longest leading part without glob characters.
pub fn include_folder(base: &Path, pattern: &str) -> PathBuf {
    let mut folder = if base == Path::new(".") { PathBuf::new() } else { base.to_path_buf() };
    let parts: Vec<&str> = pattern.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() || glob_chars(part) {
            break;
        }
        folder.push(part);
    }
    folder
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read config: {e}"))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err("cannot read config: it is a directory".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read config: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("config is larger than the {} MiB limit", MAX_CONFIG_BYTES / (1024 * 1024)));
    }
    Ok(bytes)
}

/// Validates config text alone (its `include` is checked but not read), the disk checks
/// included. `path` is used in messages; `base` resolves relative paths.
pub fn parse_str(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigErrors> {
    parse_sources(&Source { path: path.to_path_buf(), text: text.to_string() }, &[], base, Disk::Check)
}

/// Validates a main config and its drop-ins together; with [`Disk::Check`], what they name on
/// disk too.
pub fn parse_sources(main: &Source, dropins: &[Source], base: &Path, disk: Disk) -> Result<Config, ConfigErrors> {
    let sources: Vec<&Source> = std::iter::once(main).chain(dropins).collect();
    let mut diags: Vec<Diags<'_>> =
        sources.iter().map(|s| Diags::new(&s.path.display().to_string(), &s.text)).collect();
    let roots: Vec<Option<toml::Spanned<DeTable<'_>>>> = sources
        .iter()
        .zip(&mut diags)
        .map(|(s, d)| match DeTable::parse(&s.text) {
            Ok(root) => Some(root),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim_end().replace('\n', " ");
                d.error(span, None, format!("invalid TOML: {message}"));
                None
            }
        })
        .collect();

    // The main file's own sections.
    let d = &mut diags[0];
    let mut main_top = roots[0].as_ref().map(|r| Table::new(r.get_ref(), 0..0, None));
    let scheduler = match main_top.as_mut().and_then(|t| t.table(d, "scheduler")) {
        Some((t, span)) => parse_scheduler(&mut Table::new(t, span, None).section("scheduler"), d, base),
        None => Some(SchedulerConfig::defaults(base)),
    };
    let api = main_top
        .as_mut()
        .and_then(|t| t.table(d, "api"))
        .and_then(|(t, span)| parse_api(&mut Table::new(t, span, None).section("api"), d, base));
    let default_zone = scheduler.as_ref().map_or(Tz::UTC, |s| s.timezone);

    // Names across every file: a job may name a notifier (or, for reports, a job) of another.
    let mut notifier_names: Vec<String> = Vec::new();
    let mut job_names: Vec<String> = Vec::new();
    let mut broker_names: Vec<String> = Vec::new();
    for root in roots.iter().flatten() {
        for (section, names) in
            [("notifiers", &mut notifier_names), ("jobs", &mut job_names), ("brokers", &mut broker_names)]
        {
            if let Some(t) = root.get_ref().get(section).and_then(|v| v.get_ref().as_table()) {
                names.extend(t.iter().map(|(k, _)| k.get_ref().to_string()));
            }
        }
    }

    let mut notifiers = HashMap::new();
    let mut brokers = HashMap::new();
    let mut jobs = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new(); // "notifier x" / "job x" -> FILE:LINE:COL
    for (i, (root, d)) in roots.iter().zip(&mut diags).enumerate() {
        let Some(root) = root.as_ref().map(|r| r.get_ref()) else { continue };
        let mut top =
            if i == 0 { main_top.take().expect("the main file parsed") } else { Table::new(root, 0..0, None) };
        if i > 0 {
            for section in ["scheduler", "api"] {
                if let Some(span) = top.key_span(section) {
                    top.get(section);
                    d.error(
                        span,
                        None,
                        format!("[{section}] may only be set in the main config, {}", main.path.display()),
                    );
                }
            }
        }
        named_tables(&mut top, d, &mut seen, "notifiers", "notifier", |name, t, d| {
            if let Some(n) = Notifier::parse(name, t, d) {
                notifiers.insert(name.to_string(), n);
            }
        });
        named_tables(&mut top, d, &mut seen, "brokers", "broker", |name, t, d| {
            if let Some(b) = crate::broker::BrokerConfig::parse(name, t, d) {
                brokers.insert(name.to_string(), b);
            }
        });
        if let Some((t, _)) = top.table(d, "jobs") {
            let cx = ParseContext { base, job_names: &job_names, broker_names: &broker_names };
            for (key, value) in t {
                let name = key.get_ref().as_ref();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                    d.error(
                        key.span(),
                        Some(name),
                        "job names may only contain letters, digits, \".\", \"_\" and \"-\"",
                    );
                    continue;
                }
                if let Some(first) = defined_twice(&mut seen, "job", name, d, key.span()) {
                    d.error(key.span(), Some(name), format!("defined twice: also at {first}"));
                    continue;
                }
                match value.get_ref() {
                    DeValue::Table(jt) => {
                        let mut t = Table::new(jt, key.span(), Some(name));
                        if let Some(mut job) = parse_job(name, &mut t, d, &cx, &notifier_names, default_zone) {
                            let mut definition = String::new();
                            table::canonical(value.get_ref(), &mut definition);
                            job.definition =
                                format!("{definition} zone={} base={}", job.timezone.name(), base.display());
                            jobs.push(job);
                        }
                    }
                    other => {
                        d.error(value.span(), Some(name), format!("a job must be a table, not {}", type_name(other)))
                    }
                }
            }
        }
        top.finish(d, &[]);
    }
    let mut errors = Vec::new();
    for mut d in diags {
        if disk == Disk::Check {
            d.check_disk();
        }
        if let Err(e) = d.finish() {
            errors.extend(e.0);
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let scheduler = scheduler.expect("no errors means the scheduler section parsed");
    let files = sources.iter().map(|s| s.path.clone()).collect();
    Ok(Config { path: main.path.clone(), files, scheduler, jobs, notifiers, brokers, api })
}

/// Whether a parse also checks what the config names on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// To run with it (start, reload, `beatd check`).
    Check,
    /// For its settings only (`history`, `status`, `next`).
    Skip,
}

/// Something the config names on disk, checked when the config is loaded to run (start,
/// reload, `beatd check`) and not by commands that only read its settings (`history`,
/// `status`): a link planted in a cleanup path must stop the run, not the operator's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskCheck {
    /// A cleanup path: no symbolic link on the way, not `/`, a folder if it exists.
    CleanupPath(PathBuf),
    /// A report folder: no link on the way, a folder, and not writable by others.
    OutputDir(PathBuf),
    /// `[api] token_file`: readable, and not empty.
    TokenFile(PathBuf),
}

impl DiskCheck {
    pub fn run(&self) -> Result<(), String> {
        match self {
            DiskCheck::CleanupPath(p) => crate::jobs::cleanup::check_path(p),
            DiskCheck::OutputDir(p) => crate::jobs::report::check_output_dir(p),
            DiskCheck::TokenFile(p) => match std::fs::read_to_string(p) {
                Ok(token) if token.trim().is_empty() => Err(format!(
                    "token_file {} is empty: an empty token would let anyone in (remove token_file and beatd makes one)",
                    p.display()
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(format!("cannot read token_file {}: {e}", p.display())),
            },
        }
    }
}

/// Reads each `[SECTION.NAME]` table of a file with `parse`; a name defined twice (in any file)
/// or a value that is not a table is an error.
fn named_tables<'t, 'i>(
    top: &mut Table<'t, 'i>,
    d: &mut Diags<'_>,
    seen: &mut HashMap<String, String>,
    section: &'static str,
    kind: &'static str,
    mut parse: impl FnMut(&str, &mut Table<'t, 'i>, &mut Diags<'_>),
) {
    let Some((t, _)) = top.table(d, section) else { return };
    for (key, value) in t {
        let name = key.get_ref().as_ref();
        if let Some(first) = defined_twice(seen, kind, name, d, key.span()) {
            d.error(key.span(), None, format!("{kind} \"{name}\" is also defined at {first}"));
            continue;
        }
        match value.get_ref() {
            DeValue::Table(nt) => parse(name, &mut Table::new(nt, key.span(), None).section(kind), d),
            other => {
                d.error(value.span(), None, format!("{kind} \"{name}\" must be a table, not {}", type_name(other)))
            }
        }
    }
}

/// Notes where `kind name` is defined; if it already was, returns that place.
fn defined_twice(
    seen: &mut HashMap<String, String>,
    kind: &str,
    name: &str,
    d: &Diags<'_>,
    span: std::ops::Range<usize>,
) -> Option<String> {
    let (line, col) = d.position(span.start);
    let here = format!("{}:{line}:{col}", d.file());
    match seen.entry(format!("{kind} {name}")) {
        std::collections::hash_map::Entry::Occupied(first) => Some(first.get().clone()),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(here);
            None
        }
    }
}

fn parse_scheduler(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<SchedulerConfig> {
    let timezone = match t.str(d, "timezone") {
        Some(s) => zone(t, d, &s),
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
        include,
        max_outbox,
    })
}

fn parse_api(t: &mut Table<'_, '_>, d: &mut Diags, base: &Path) -> Option<ApiConfig> {
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
    })
}

fn zone(t: &Table<'_, '_>, d: &mut Diags, s: &Str<'_>) -> Option<Tz> {
    parse_zone(s.value).map_err(|m| t.error(d, s.span.clone(), m)).ok()
}

/// A zone by its IANA name, with a hint for near misses.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
        format!("unknown time zone \"{name}\"{}", hint(name, names))
    })
}

/// A fixed instant to test "does this expression ever fire", so checking is repeatable.
fn probe_instant() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01
}

fn parse_job(
    name: &str,
    t: &mut Table<'_, '_>,
    d: &mut Diags,
    cx: &ParseContext<'_>,
    notifier_names: &[String],
    default_zone: Tz,
) -> Option<Job> {
    let enabled = t.bool(d, "enabled").unwrap_or(true);
    let policy = Policy::parse(t, d);
    let notify = t.str(d, "notify").and_then(|n| {
        if notifier_names.iter().any(|x| x == n.value) {
            Some(n.value.to_string())
        } else {
            let h = hint(n.value, notifier_names.iter().map(String::as_str));
            t.error(
                d,
                n.span.clone(),
                format!("no notifier \"{}\" (define it as [notifiers.{}]){h}", n.value, n.value),
            );
            None
        }
    });
    let notify_on = match t.str_list(d, "notify_on") {
        None => NotifyOn::default(),
        Some((events, _)) => {
            let mut on = NotifyOn { failure: false, recovery: false };
            for e in events {
                match e.value {
                    "failure" => on.failure = true,
                    "recovery" => on.recovery = true,
                    other => {
                        let msg = format!("unknown event \"{other}\" (one of: {})", notifications::EVENTS.join(", "));
                        t.error(d, e.span, msg);
                    }
                }
            }
            on
        }
    };
    let timezone = match t.str(d, "timezone") {
        Some(s) => zone(t, d, &s),
        None => Some(default_zone),
    };
    let cron = t.str(d, "cron");
    let every = t.str(d, "every");
    let offset = t.str(d, "offset");

    let schedule = match (&cron, &every) {
        (Some(c), Some(e)) => {
            let span = t.key_span("every").unwrap_or(e.span.clone());
            t.error(d, span, "set either \"cron\" or \"every\", not both");
            // Still report what is wrong with either value, so one run shows everything.
            if let Some(tz) = timezone {
                cron_schedule(t, d, c, tz);
            }
            interval_schedule(t, d, e, offset.clone());
            None
        }
        (None, None) => {
            t.error(d, t.span.clone(), "missing schedule: set \"cron\" or \"every\"");
            None
        }
        (Some(c), None) => {
            if let Some(o) = &offset {
                t.error(d, o.span.clone(), "\"offset\" goes with \"every\", not with \"cron\"");
            }
            cron_schedule(t, d, c, timezone?)
        }
        (None, Some(e)) => interval_schedule(t, d, e, offset.clone()),
    };

    let action = match t.str(d, "action") {
        None => {
            if t.key_span("action").is_none() {
                t.error(d, t.span.clone(), format!("missing key \"action\" (one of: {})", ACTIONS.join(", ")));
            }
            t.finish(d, &Action::all_keys());
            return None;
        }
        Some(a) if !ACTIONS.contains(&a.value) => {
            let msg = format!(
                "unknown action \"{}\"{}",
                a.value,
                match hint(a.value, ACTIONS.iter().copied()) {
                    h if h.is_empty() => format!(" (one of: {})", ACTIONS.join(", ")),
                    h => h,
                }
            );
            t.error(d, a.span.clone(), msg);
            t.finish(d, &Action::all_keys());
            return None;
        }
        Some(a) => Action::parse(a.value, t, d, cx),
    };
    t.finish(d, &[]);
    let (schedule, schedule_text) = schedule?;
    let mut action = action?;
    // A check's own request timeout is the job's timeout.
    if let Some(timeout) = policy.timeout {
        match &mut action {
            Action::HttpCheck(h) => h.timeout = timeout,
            Action::TcpCheck(c) => c.timeout = timeout,
            _ => {}
        }
    }
    Some(Job {
        name: name.into(),
        schedule,
        schedule_text,
        timezone: timezone?,
        enabled,
        action,
        policy,
        notify,
        notify_on,
        definition: String::new(),
    })
}

/// Why a schedule text was refused; `at` is the byte offset in the text, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub at: Option<usize>,
    pub message: String,
}

/// Builds a cron schedule from its text, refusing expressions that never fire.
pub fn cron_from_text(text: &str, tz: Tz) -> Result<(Schedule, String), ScheduleError> {
    match cron::parse(text) {
        Ok(cron::Parsed::Reboot) => Ok((Schedule::Reboot, "@reboot".into())),
        Ok(cron::Parsed::Fields(expr)) => {
            let s = CronSchedule::new(expr, tz);
            if s.next_after(probe_instant()).is_none() {
                return Err(ScheduleError { at: None, message: format!("cron expression \"{text}\" never fires") });
            }
            Ok((Schedule::Cron(s), text.trim().to_string()))
        }
        Err(e) => Err(ScheduleError {
            at: Some(e.offset),
            message: format!("invalid cron expression \"{text}\": {}", e.message),
        }),
    }
}

/// Builds an interval schedule from `every` and `offset` texts.
pub fn every_from_text(every: &str, offset: Option<&str>) -> Result<(Schedule, String), ScheduleError> {
    let err = |message: String| ScheduleError { at: None, message };
    let period =
        table::parse_duration(every).map_err(|e| err(format!("invalid duration \"{every}\" for \"every\": {e}")))?;
    if period < Duration::from_secs(1) {
        return Err(err(format!("\"every\" must be at least 1s, not \"{every}\"")));
    }
    let shift = match offset {
        Some(o) => {
            table::parse_duration(o).map_err(|e| err(format!("invalid duration \"{o}\" for \"offset\": {e}")))?
        }
        None => Duration::ZERO,
    };
    let interval = Interval::new(period, shift)
        .ok_or_else(|| err(format!("\"offset\" must be smaller than \"every\" ({})", every.trim())))?;
    let mut text = format!("every {}", every.trim());
    if !shift.is_zero() {
        text.push_str(&format!(" offset {}", humantime::format_duration(shift)));
    }
    Ok((Schedule::Every(interval), text))
}

fn cron_schedule(t: &Table<'_, '_>, d: &mut Diags, c: &Str<'_>, tz: Tz) -> Option<(Schedule, String)> {
    cron_from_text(c.value, tz)
        .map_err(|e| {
            // Point inside the string when it is written plainly (no escapes).
            let raw = d.text().get(c.span.clone()).unwrap_or("");
            let at = match e.at {
                Some(off) if raw.len() == c.value.len() + 2 => c.span.start + 1 + off,
                _ => c.span.start,
            };
            t.error(d, at..at, e.message);
        })
        .ok()
}

fn interval_schedule(
    t: &Table<'_, '_>,
    d: &mut Diags,
    e: &Str<'_>,
    offset: Option<Str<'_>>,
) -> Option<(Schedule, String)> {
    every_from_text(e.value, offset.as_ref().map(|o| o.value))
        .map_err(|err| {
            let span = match &offset {
                Some(o) if err.message.contains("\"offset\"") => o.span.clone(),
                _ => e.span.clone(),
            };
            t.error(d, span, err.message);
        })
        .ok()
}

/// The system's zone, as cron finds it: `TZ`, then `/etc/localtime`; UTC if neither is known.
pub fn system_zone() -> Tz {
    if let Ok(tz) = std::env::var("TZ") {
        let name = tz.trim_start_matches(':');
        let name = name.rsplit_once("zoneinfo/").map_or(name, |(_, n)| n);
        if let Ok(zone) = name.parse() {
            return zone;
        }
    }
    iana_time_zone::get_timezone().ok().and_then(|n| n.parse().ok()).unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(text: &str) -> String {
        let config = parse_str(text, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        config.jobs[0].definition.clone()
    }

    #[test]
    fn a_definition_ignores_layout_but_not_values_or_the_zone() {
        let a =
            definition("[jobs.a]\nevery = \"5m\"\naction = \"command\"\ncommand = \"echo hi\"\ntimeout = \"10s\"\n");
        let b = definition(
            "# moved around\n[jobs]\na = { timeout = \"10s\", command = \"echo hi\",   action = \"command\", every = \"5m\" }\n",
        );
        assert_eq!(a, b);
        let c =
            definition("[jobs.a]\nevery = \"5m\"\naction = \"command\"\ncommand = \"echo ho\"\ntimeout = \"10s\"\n");
        assert_ne!(a, c);
        let d = definition(
            "[scheduler]\ntimezone = \"Europe/Berlin\"\n[jobs.a]\nevery = \"5m\"\naction = \"command\"\ncommand = \"echo hi\"\ntimeout = \"10s\"\n",
        );
        assert_ne!(a, d, "the default zone the job is read in is part of it");
    }
}
