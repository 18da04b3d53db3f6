//! The config file: a TOML schedule edited by hand, read into the model the daemon runs.
//!
//! Reading goes in stages. [`toml::de::DeTable`] keeps every key and value with its span; then
//! each part of the file is read into its domain type by its own module here: jobs by
//! [`job`] (with their actions' keys in [`actions`]), the other sections by `sections`. Every
//! error is collected with its position instead of stopping at the first, so `beatd check`
//! reports all of them in one run. Nothing outside this module sees TOML.
//!
//! Files: [`load`] reads the main file and the drop-ins its `include` names (and nothing
//! else). What the config *names* on disk (cleanup paths, report folders, the token file) is
//! checked only when the config is loaded to run ([`Disk::Check`]): see [`DiskCheck`]. Reading
//! the jobs also looks up `user` and `group` names in the system's account database.

pub mod actions;
pub mod diag;
pub mod job;
pub mod schema;
mod sections;
pub mod table;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use toml::de::{DeTable, DeValue};

use self::actions::ParseContext;
use self::diag::{ConfigErrors, Diagnostic, Diags, Section, hint};
use self::table::{Table, type_name};
use crate::api::ApiConfig;
use crate::cluster::ClusterConfig;
use crate::job::{Job, Retention};
use crate::notifications::Notifier;

pub use self::job::{ScheduleError, cron_from_text, every_from_text, parse_zone};

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
    /// `[cluster]`: absent means this node runs alone.
    pub cluster: Option<ClusterConfig>,
    /// `[databases.NAME]`: where `sql` and `sql_check` jobs run.
    pub databases: HashMap<String, crate::databases::DatabaseConfig>,
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
    /// `history` and `history_keep_runs`: every job's, unless it sets its own.
    pub history: Retention,
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
            history: Retention::default(),
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
    // may name a notifier of another file, and a name defined twice is caught. Each is read
    // when its turn comes and dropped after it (see `parse_sources`).
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    // Patterns the parse refuses (absolute, or climbing out with "..") are not read at all.
    let patterns = include_patterns(&main.text);
    for pattern in patterns.iter().filter(|p| !Path::new(p).is_absolute() && !p.split('/').any(|c| c == "..")) {
        match expand_include(&base, pattern) {
            Ok(found) => paths.extend(found),
            Err(e) => {
                errors.push(Diagnostic { file: path.display().to_string(), position: None, job: None, message: e })
            }
        }
    }
    let mut unreadable = Vec::new();
    let dropins = paths.iter().filter_map(|p| match read_source(p) {
        Ok(s) => Some(s),
        Err(e) => {
            unreadable.extend(e.0);
            None
        }
    });
    let parsed = parse_sources(&main, dropins, &base, disk);
    errors.splice(0..0, unreadable);
    match parsed {
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
    Source::from_bytes(path, bytes)
}

impl Source {
    /// A config file's bytes as text: UTF-8, or an error at the first byte that is not.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Source, ConfigErrors> {
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Source { path: path.to_path_buf(), text }),
            Err(e) => {
                let shown = path.display().to_string();
                let valid = e.utf8_error().valid_up_to();
                let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
                let mut d = Diags::new(&shown, &prefix);
                d.error(valid..valid, None, "invalid UTF-8: a config must be UTF-8 text");
                Err(d.finish().expect_err("one error was added"))
            }
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
fn expand_include(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
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
    let meta = file.metadata().ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err("cannot read config: it is a directory".into());
    }
    // Sized from the file's length: every text stays in memory while the config is validated
    // (its errors quote positions), and growing by doubling held up to twice each file, 8 MB
    // more at the peak of loading 100 000 jobs.
    let size = meta.map_or(0, |m| m.len().min(MAX_CONFIG_BYTES + 1));
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read config: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("config is larger than the {} MiB limit", MAX_CONFIG_BYTES / (1024 * 1024)));
    }
    Ok(bytes)
}

/// Validates config text alone (its `include` is checked but not read), the disk checks
/// included. `path` is used in messages; `base` resolves relative paths.
pub fn parse_str(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigErrors> {
    parse_sources(&Source { path: path.to_path_buf(), text: text.to_string() }, [], base, Disk::Check)
}

/// Validates a main config and its drop-ins together; with [`Disk::Check`], what they name on
/// disk too.
///
/// One file at a time, and each drop-in is dropped once read: a TOML document is ~10 times
/// its text, and five 4 MiB drop-ins held together made the peak of a start four times the
/// daemon's steady size; their texts, kept to the end, were 11 MB more at the peak of 100 000
/// jobs. Positions are worked out as errors are found ([`Diags::close`] lets the text go);
/// names that a job refers to in another file are checked once all are read.
pub fn parse_sources(
    main: &Source,
    dropins: impl IntoIterator<Item = Source>,
    base: &Path,
    disk: Disk,
) -> Result<Config, ConfigErrors> {
    let mut files = vec![main.path.clone()];
    let mut diags: Vec<Diags<'static>> = Vec::new();
    let (mut scheduler, mut api, mut cluster) = (None, None, None);
    let mut defaults = (Tz::UTC, Retention::default());
    let mut parts = Parts::default();
    let mut dropins = dropins.into_iter();
    let mut owned;
    for i in 0.. {
        let source = if i == 0 {
            main
        } else {
            let Some(next) = dropins.next() else { break };
            files.push(next.path.clone());
            owned = next;
            &owned
        };
        let mut d = Diags::new(&source.path.display().to_string(), &source.text);
        let root = parse_toml(source, &mut d);
        let mut top = root.as_ref().map(|r| Table::new(r.get_ref(), 0..0, None));
        if i == 0 {
            (scheduler, api, cluster) = main_sections(top.as_mut(), &mut d, base);
            if let Some(s) = &scheduler {
                defaults = (s.timezone, s.history);
            }
        }
        if let Some(mut top) = top {
            if i > 0 {
                refuse_main_sections(&mut top, &mut d, &main.path);
            }
            parts.read_file(&mut top, &mut d, i, base, defaults);
            top.finish(&mut d, &[]);
        }
        drop(root);
        diags.push(d.close());
    }
    let mut errors = Vec::new();
    for mut d in diags {
        d.check_references(|section, name| parts.seen.missing(section, name));
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
    let Parts { notifiers, brokers, jobs, databases, .. } = parts;
    Ok(Config { path: main.path.clone(), files, scheduler, jobs, notifiers, brokers, api, cluster, databases })
}

/// The source's TOML with spans; `None` when it is not TOML (the error is in `diags[i]`).
fn parse_toml<'s>(source: &'s Source, d: &mut Diags<'_>) -> Option<toml::Spanned<DeTable<'s>>> {
    match DeTable::parse(&source.text) {
        Ok(root) => Some(root),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim_end().replace('\n', " ");
            d.error(span, None, format!("invalid TOML: {message}"));
            None
        }
    }
}

/// The main file's own sections, `[scheduler]` (its defaults when absent), `[api]` and
/// `[cluster]`.
fn main_sections(
    top: Option<&mut Table<'_, '_>>,
    d: &mut Diags<'_>,
    base: &Path,
) -> (Option<SchedulerConfig>, Option<ApiConfig>, Option<ClusterConfig>) {
    let Some(top) = top else { return (Some(SchedulerConfig::defaults(base)), None, None) };
    let scheduler = match top.table(d, "scheduler") {
        Some((t, span)) => sections::scheduler(&mut Table::new(t, span, None).section("scheduler"), d, base),
        None => Some(SchedulerConfig::defaults(base)),
    };
    let api =
        top.table(d, "api").and_then(|(t, span)| sections::api(&mut Table::new(t, span, None).section("api"), d, base));
    let cluster = top
        .table(d, "cluster")
        .and_then(|(t, span)| sections::cluster(&mut Table::new(t, span, None).section("cluster"), d));
    (scheduler, api, cluster)
}

/// A drop-in may not set the main file's sections.
fn refuse_main_sections(top: &mut Table<'_, '_>, d: &mut Diags<'_>, main: &Path) {
    for section in ["scheduler", "api", "cluster"] {
        if let Some(span) = top.key_span(section) {
            top.get(section);
            d.error(span, None, format!("[{section}] may only be set in the main config, {}", main.display()));
        }
    }
}

/// What the files define, as they are read one after the other.
#[derive(Debug, Default)]
struct Parts {
    notifiers: HashMap<String, Notifier>,
    brokers: crate::broker::BrokerConfigs,
    databases: HashMap<String, crate::databases::DatabaseConfig>,
    jobs: Vec<Job>,
    seen: Seen,
    shared: job::Shared,
}

impl Parts {
    /// Reads one file's `[notifiers]`, `[brokers]` and `[jobs]`; `defaults` are the zone and
    /// history retention `[scheduler]` sets for jobs.
    fn read_file(
        &mut self,
        top: &mut Table<'_, '_>,
        d: &mut Diags<'_>,
        file: usize,
        base: &Path,
        defaults: (Tz, Retention),
    ) {
        let (notifiers, brokers) = (&mut self.notifiers, &mut self.brokers);
        let seen = &mut self.seen;
        named_tables(top, d, seen, file, Section::Notifiers, |name, t, d| {
            if let Some(n) = sections::notifier(name, t, d, base) {
                notifiers.insert(name.to_string(), n);
            }
        });
        named_tables(top, d, seen, file, Section::Brokers, |name, t, d| {
            if let Some(b) = sections::broker(name, t, d, base) {
                brokers.insert(name.to_string(), b);
            }
        });
        let databases = &mut self.databases;
        named_tables(top, d, &mut self.seen, file, Section::Databases, |name, t, d| {
            if let Some(db) = sections::database(name, t, d, base) {
                databases.insert(name.to_string(), db);
            }
        });
        let Some((t, _)) = top.table(d, "jobs") else { return };
        // Grown by each file's count, not doubled: 4.5 MB less at the peak of 100 000 jobs.
        self.jobs.reserve_exact(t.len());
        let cx = ParseContext { base };
        let mut definition = String::new();
        for (key, value) in t {
            let name = key.get_ref().as_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                d.error(key.span(), Some(name), "job names may only contain letters, digits, \".\", \"_\" and \"-\"");
                continue;
            }
            if let Some(first) = self.seen.defined_twice(file, Section::Jobs, name, d, key.span()) {
                d.error(key.span(), Some(name), format!("defined twice: also at {first}"));
                continue;
            }
            let DeValue::Table(jt) = value.get_ref() else {
                d.error(value.span(), Some(name), format!("a job must be a table, not {}", type_name(value.get_ref())));
                continue;
            };
            let mut t = Table::new(jt, key.span(), Some(name));
            if let Some(mut job) = job::job(name, &mut t, d, &cx, defaults.0, defaults.1, &mut self.shared) {
                use std::fmt::Write;
                definition.clear();
                table::canonical(value.get_ref(), &mut definition);
                let _ = write!(definition, " zone={} base={}", job.timezone.name(), base.display());
                job.definition = uuid::Uuid::new_v5(&DEFINITION_NAMESPACE, definition.as_bytes());
                self.jobs.push(job);
            }
        }
    }
}

/// Namespace of the digests in [`Job::definition`].
const DEFINITION_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2b0e_61d4_7c1a_4d8e_a3f5_90c4_1e6b_d7a2);

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
    /// `[databases.*] password_file`: readable.
    PasswordFile(PathBuf),
    /// `ca_file`, `client_cert`, `client_key`: readable PEM files holding what they should.
    Tls(crate::tls::TlsFiles),
}

impl DiskCheck {
    pub(crate) fn run(&self) -> Result<(), String> {
        match self {
            DiskCheck::CleanupPath(p) => crate::jobs::cleanup::check_path(p).map_err(|e| e.to_string()),
            DiskCheck::OutputDir(p) => crate::jobs::report::check_output_dir(p).map_err(|e| format!("output_dir: {e}")),
            DiskCheck::PasswordFile(p) => std::fs::File::open(p)
                .map(|_| ())
                .map_err(|e| format!("cannot read password_file {}: {e}", p.display())),
            DiskCheck::Tls(files) => files.read().map(|_| ()),
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
    seen: &mut Seen,
    file: usize,
    section: Section,
    mut parse: impl FnMut(&str, &mut Table<'t, 'i>, &mut Diags<'_>),
) {
    let Some((t, _)) = top.table(d, section.key()) else { return };
    let kind = section.kind();
    for (key, value) in t {
        let name = key.get_ref().as_ref();
        if let Some(first) = seen.defined_twice(file, section, name, d, key.span()) {
            d.error(key.span(), None, format!("{kind} \"{name}\" is also defined at {first}"));
            continue;
        }
        match value.get_ref() {
            DeValue::Table(nt) => parse(name, &mut Table::new(nt, key.span(), None).named(kind, name), d),
            other => {
                d.error(value.span(), None, format!("{kind} \"{name}\" must be a table, not {}", type_name(other)))
            }
        }
    }
}

/// Every name the files define, by section (those with errors too), with where it was first
/// defined: (file, line, column).
#[derive(Debug, Default)]
struct Seen {
    /// Where each name was first defined: file index, line, column (`u32`s: 1 MB less for
    /// 100 000 jobs than `usize`s).
    first: [HashMap<Box<str>, (u32, u32, u32)>; 4],
    files: Vec<String>,
}

impl Seen {
    /// Notes where `name` of `section` is defined; if it already was, returns that place.
    fn defined_twice(
        &mut self,
        file: usize,
        section: Section,
        name: &str,
        d: &Diags<'_>,
        span: std::ops::Range<usize>,
    ) -> Option<String> {
        if self.files.len() <= file {
            self.files.resize(file + 1, String::new());
            self.files[file] = d.file().to_string();
        }
        let names = &mut self.first[section as usize];
        if let Some(&(f, line, col)) = names.get(name) {
            return Some(format!("{}:{line}:{col}", self.files[f as usize]));
        }
        let (line, col) = d.position(span.start);
        let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        names.insert(name.into(), (narrow(file), narrow(line), narrow(col)));
        None
    }

    /// The error for a reference to `name` in `section` when no file defines it.
    fn missing(&self, section: Section, name: &str) -> Option<String> {
        let names = &self.first[section as usize];
        if names.contains_key(name) {
            return None;
        }
        let h = hint(name, names.keys().map(|n| &**n));
        Some(match section {
            Section::Jobs => format!("no job \"{name}\" to report on{h}"),
            _ => format!("no {} \"{name}\" (define it as [{}.{name}]){h}", section.kind(), section.key()),
        })
    }
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

    fn definition(text: &str) -> uuid::Uuid {
        let config = parse_str(text, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        config.jobs[0].definition
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

    #[test]
    fn history_retention_is_set_for_all_jobs_and_per_job() {
        use crate::job::HistoryMode;
        let text = "[scheduler]\nhistory = \"failures\"\nhistory_keep_runs = 100\n\
                    [jobs.a]\nevery = \"1s\"\naction = \"noop\"\n\
                    [jobs.b]\nevery = \"1s\"\naction = \"noop\"\nhistory = \"all\"\n\
                    [jobs.c]\nevery = \"1s\"\naction = \"noop\"\nhistory = \"off\"\nhistory_keep_runs = 3\n";
        let config = parse_str(text, Path::new("t.toml"), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(HistoryMode, Option<u64>)> =
            config.jobs.iter().map(|j| (j.history.mode, j.history.max_runs.map(|n| n.get()))).collect();
        assert_eq!(
            got,
            [(HistoryMode::Failures, Some(100)), (HistoryMode::All, Some(100)), (HistoryMode::Off, Some(3))]
        );
        let bad = "[jobs.a]\nevery = \"1s\"\naction = \"noop\"\nhistory = \"some\"\nhistory_keep_runs = 0\n";
        let e = parse_str(bad, Path::new("t.toml"), Path::new(".")).expect_err("invalid").to_string();
        assert!(e.contains("t.toml:4:11: job \"a\": ") && e.contains("\"some\""), "{e}");
        assert!(e.contains("t.toml:5:21: job \"a\": \"history_keep_runs\" must be 1 or more"), "{e}");
    }
}
