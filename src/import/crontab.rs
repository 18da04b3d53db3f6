//! `beatd import crontab`: a crontab as beatd jobs that fire at the same instants.
//!
//! Each entry becomes a `command` job with the same expression (beatd's cron has Vixie cron's
//! meaning, so the expression is kept as written) and the same command, run by `/bin/sh -c`
//! as cron runs it. What cron's lines set for the entries below them is carried the same way:
//! `NAME=value` lines go into those jobs' `env` (with cron's default `PATH=/usr/bin:/bin` when
//! the crontab sets none), `CRON_TZ=`/`TZ=` into their `timezone`, a `SHELL` other than
//! `/bin/sh` wraps the command in that shell, `MAILTO=` into a `notify` when one is given.
//! Comments are kept as TOML comments.
//!
//! What beatd cannot do the same way is refused with the line and column, never changed in
//! silence: cron's unescaped `%` (the rest of the line becomes the command's standard input),
//! an expression or zone beatd does not read, a line that is neither an entry nor a setting.

use std::collections::HashSet;
use std::fmt;

use super::{slugify, toml_str, unique};
use crate::schedule::cron;

/// How to read the crontab.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The file's name, for messages and the header.
    pub source: String,
    /// A system crontab (`/etc/crontab`, `/etc/cron.d/*`): a user field before the command.
    pub system: bool,
    /// A notifier for the jobs of entries cron would have mailed.
    pub notify: Option<String>,
    /// The user a user crontab's commands run as (its owner's, under cron).
    pub user: Option<String>,
}

/// A line beatd cannot take as it is: `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub source: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.source, self.line, self.col, self.message)
    }
}

/// Cron's environment for a command when the crontab sets no `PATH`.
const CRON_PATH: &str = "/usr/bin:/bin";

/// What the setting lines above an entry have set.
#[derive(Debug, Default, Clone)]
struct Settings {
    env: Vec<(String, String)>,
    timezone: Option<String>,
    shell: Option<String>,
    /// `None`: not set (cron mails the crontab's owner); `Some("")`: no mail.
    mailto: Option<String>,
}

impl Settings {
    fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
    }
}

/// The crontab as a beatd config, or every line it cannot take.
pub fn import(text: &str, opts: &Options) -> Result<String, Vec<ImportError>> {
    let mut out = String::new();
    out.push_str(&format!("# Imported from {} by `beatd import crontab`.\n", opts.source));
    out.push_str("# Each job runs its entry's command with /bin/sh -c, as cron does, with cron's environment\n");
    out.push_str(&format!("# (PATH={CRON_PATH} unless the crontab sets one) and the settings above it.\n"));
    if !opts.system && opts.user.is_none() {
        out.push_str(
            "# cron ran them as the crontab's owner; here they run as beatd's user (`--user NAME` sets one).\n",
        );
    }
    let mut errors = Vec::new();
    let mut settings = Settings::default();
    let mut names = HashSet::new();
    let mut pending_blank = false;
    let mut after_job = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err =
            |col: usize, message: String| ImportError { source: opts.source.clone(), line: line_no, col, message };
        let line = raw.trim_end_matches('\r');
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if body.is_empty() {
            pending_blank = true;
            continue;
        }
        if pending_blank || after_job {
            out.push('\n');
            pending_blank = false;
        }
        after_job = false;
        if let Some(comment) = body.strip_prefix('#') {
            out.push_str(&format!("#{comment}\n"));
            continue;
        }
        if let Some((name, value)) = setting(body) {
            match apply(&mut settings, name, &value, opts) {
                Ok(note) => out.push_str(&format!("# {name}={value}{note}\n")),
                Err(message) => errors.push(err(indent + 1, message)),
            }
            continue;
        }
        match entry(body, indent, opts, &settings, &mut names) {
            Ok(job) => {
                out.push_str(&job);
                after_job = true;
            }
            Err((col, message)) => errors.push(err(col, message)),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// `NAME=value` (spaces allowed around `=`, the value maybe quoted), as cron reads a setting:
/// the name, and the value unquoted.
fn setting(body: &str) -> Option<(&str, String)> {
    let (name, value) = body.split_once('=')?;
    let name = name.trim_end();
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return None;
    }
    let value = value.trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)).filter(|_| value.len() >= 2));
    Some((name, unquoted.unwrap_or(value).to_string()))
}

/// Applies a setting to the entries below it; `Ok` is a note for the comment that keeps it.
fn apply(settings: &mut Settings, name: &str, value: &str, opts: &Options) -> Result<String, String> {
    match name {
        "CRON_TZ" | "TZ" => {
            if value.is_empty() {
                settings.timezone = None;
            } else {
                crate::config::job::parse_zone(value).map_err(|e| format!("{name}: {e}"))?;
                settings.timezone = Some(value.to_string());
            }
            if name == "TZ" {
                settings.set_env(name, value);
            }
            Ok(" (the timezone of the jobs below)".into())
        }
        "MAILTO" => {
            settings.mailto = Some(value.to_string());
            Ok(match (&opts.notify, value.is_empty()) {
                (_, true) => " (no mail: the jobs below notify no one)".into(),
                (Some(n), false) => format!(" (the jobs below notify \"{n}\" of failures and recoveries)"),
                (None, false) => " dropped: beatd does not mail a run's output; `--notify NAME` makes the jobs below \
                                  notify an email notifier of failures and recoveries"
                    .into(),
            })
        }
        "SHELL" => {
            settings.shell = Some(value.to_string());
            settings.set_env(name, value);
            Ok(match value {
                "/bin/sh" => String::new(),
                _ => format!(" (the commands below run in {value})"),
            })
        }
        _ => {
            settings.set_env(name, value);
            Ok(String::new())
        }
    }
}

/// One entry as a job table, or the column and reason it cannot be one.
fn entry(
    body: &str,
    indent: usize,
    opts: &Options,
    settings: &Settings,
    names: &mut HashSet<String>,
) -> Result<String, (usize, String)> {
    // The schedule: a macro, or five fields; then the user (system crontabs) and the command.
    let fields_wanted = if body.starts_with('@') { 1 } else { 5 } + usize::from(opts.system);
    let mut rest = body;
    let mut offset = indent;
    let mut fields = Vec::new();
    for _ in 0..fields_wanted {
        let start = rest.len() - rest.trim_start().len();
        rest = &rest[start..];
        offset += start;
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        fields.push((offset, &rest[..end]));
        rest = &rest[end..];
        offset += end;
    }
    let command_start = offset + (rest.len() - rest.trim_start().len());
    let command = rest.trim();
    if fields.len() < fields_wanted || command.is_empty() {
        let what = match opts.system {
            true => "a schedule (five fields or a macro), a user and a command",
            false => "a schedule (five fields or a macro) and a command (with a user field, use --system)",
        };
        return Err((indent + 1, format!("not a setting or an entry: expected {what}")));
    }
    let user = match opts.system {
        true => fields.pop().map(|(_, u)| u),
        false => opts.user.as_deref(),
    };
    let schedule_at = fields[0].0;
    let schedule = &body[schedule_at - indent..fields[fields.len() - 1].0 - indent + fields[fields.len() - 1].1.len()];
    if let Err(e) = cron::parse(schedule) {
        return Err((schedule_at + e.offset + 1, format!("invalid cron expression \"{schedule}\": {}", e.message)));
    }
    let command = unescape_percent(command).map_err(|at| {
        (
            command_start + at + 1,
            "cron's % makes the rest of the line the command's standard input, which beatd does not do: write \\% \
             for a % in the command, or give the input another way (a here-document, a file)"
                .to_string(),
        )
    })?;
    let command = match settings.shell.as_deref() {
        None | Some("/bin/sh") => command,
        Some(shell) => {
            let quoted = shlex::try_quote(&command)
                .map_err(|e| (command_start + 1, format!("cannot quote the command: {e}")))?;
            format!("exec {shell} -c {quoted}")
        }
    };
    let name = unique(slug(&command), names);
    let mut job = format!("[jobs.{name}]\ncron = {}\n", toml_str(schedule.trim()));
    if let Some(tz) = &settings.timezone {
        job.push_str(&format!("timezone = {}\n", toml_str(tz)));
    }
    job.push_str(&format!("action = \"command\"\ncommand = {}\n", toml_str(&command)));
    let mut env = settings.env.clone();
    if !env.iter().any(|(n, _)| n == "PATH") {
        env.insert(0, ("PATH".to_string(), CRON_PATH.to_string()));
    }
    let pairs: Vec<String> = env.iter().map(|(n, v)| format!("{} = {}", toml_key(n), toml_str(v))).collect();
    job.push_str(&format!("env = {{ {} }}\n", pairs.join(", ")));
    if let Some(user) = user {
        job.push_str(&format!("user = {}\n", toml_str(user)));
    }
    if let Some(notifier) = &opts.notify
        && settings.mailto.as_deref() != Some("")
    {
        job.push_str(&format!("notify = {}\n", toml_str(notifier)));
    }
    Ok(job)
}

/// Cron's `\%` is a `%`; a bare `%` is the start of standard input: `Err` is its byte offset.
fn unescape_percent(command: &str) -> Result<String, usize> {
    let mut out = String::with_capacity(command.len());
    let mut chars = command.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|(_, n)| *n == '%') => {
                out.push('%');
                chars.next();
            }
            '%' => return Err(i),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A readable name from a command: its program and first arguments that are words or paths,
/// past `cd`, `test` and similar preambles: `cd / && run-parts --report /etc/cron.daily` is
/// `run-parts-cron-daily`.
fn slug(command: &str) -> String {
    const PREAMBLE: &[&str] = &["cd", "test", "[", "(", "exec", "env", "nice", "ionice", "sudo", "timeout", "flock"];
    let mut words = Vec::new();
    for segment in command.split(['&', '|', ';', '(', ')', '{', '}', '\n']) {
        let mut tokens = segment.split_whitespace().filter(|t| !t.contains('='));
        let Some(program) = tokens.next() else { continue };
        let program = program.rsplit('/').next().unwrap_or(program);
        if PREAMBLE.contains(&program) {
            continue;
        }
        words.push(program.to_string());
        for token in tokens {
            if words.len() == 3 || token.starts_with(['>', '<', '2', '$', '"', '\'', '`']) {
                break;
            }
            if token.starts_with('-') {
                continue;
            }
            words.push(token.trim_end_matches('/').rsplit('/').next().unwrap_or(token).to_string());
        }
        break;
    }
    slugify(&words.join("-"))
}

fn toml_key(k: &str) -> String {
    match k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        true => k.to_string(),
        false => toml_str(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Result<String, Vec<ImportError>> {
        import(text, &Options { source: "crontab".into(), ..Options::default() })
    }

    #[test]
    fn names_are_readable_unique_and_stable() {
        assert_eq!(slug("cd / && run-parts --report /etc/cron.daily"), "run-parts-cron-daily");
        assert_eq!(
            slug("test -x /usr/sbin/anacron || ( cd / && run-parts --report /etc/cron.weekly )"),
            "run-parts-cron-weekly"
        );
        assert_eq!(slug("/usr/local/bin/backup --full > /var/log/backup.log 2>&1"), "backup");
        assert_eq!(slug("FOO=1 python3 manage.py clearsessions"), "python3-manage-py-clearsessions");
        assert_eq!(slug("!!!"), "job");
        let mut names = HashSet::new();
        assert_eq!(unique("a".into(), &mut names), "a");
        assert_eq!(unique("a".into(), &mut names), "a-2");
        assert_eq!(unique("a".into(), &mut names), "a-3");
    }

    #[test]
    fn settings_apply_to_the_entries_below_them() {
        let out = user(
            "# nightly\nMAILTO=\"\"\nPATH=/usr/local/bin:/usr/bin\n0 3 * * * backup\nCRON_TZ=Europe/Berlin\nFOO = 'a b'\n\
             @hourly  poll --now\n",
        )
        .expect("imports");
        assert!(out.contains("# nightly\n# MAILTO= (no mail: the jobs below notify no one)\n"), "{out}");
        assert!(out.contains("[jobs.backup]\ncron = \"0 3 * * *\"\naction = \"command\"\ncommand = \"backup\"\nenv = { PATH = \"/usr/local/bin:/usr/bin\" }\n"), "{out}");
        assert!(out.contains("[jobs.poll]\ncron = \"@hourly\"\ntimezone = \"Europe/Berlin\"\n"), "{out}");
        assert!(out.contains("env = { PATH = \"/usr/local/bin:/usr/bin\", FOO = \"a b\" }\n"), "{out}");
        let default = user("* * * * * date\n").expect("imports");
        assert!(default.contains("env = { PATH = \"/usr/bin:/bin\" }"), "cron's own PATH: {default}");
    }

    #[test]
    fn percent_signs_are_refused_unless_escaped_and_the_error_says_where() {
        let out = user("0 1 * * * tar czf /b/$(date +\\%F).tgz /srv\n").expect("imports");
        assert!(out.contains("command = \"tar czf /b/$(date +%F).tgz /srv\""), "{out}");
        let errors = user("# x\n0 1 * * * mail -s hi root%body\n").expect_err("refused");
        assert_eq!(errors[0].to_string().split(": cron's %").next(), Some("crontab:2:26"));
    }

    #[test]
    fn lines_beatd_cannot_take_are_each_refused_with_their_place() {
        let errors = user("0 25 * * * a\n* * * *\nCRON_TZ=Mars/Base\n* * * * * ok\n").expect_err("refused");
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(text[0].starts_with("crontab:1:3: invalid cron expression \"0 25 * * *\": "), "{text:#?}");
        assert!(text[1].starts_with("crontab:2:1: not a setting or an entry"), "{text:#?}");
        assert!(text[2].starts_with("crontab:3:1: CRON_TZ: unknown time zone \"Mars/Base\""), "{text:#?}");
    }

    #[test]
    fn a_system_crontab_gives_users_and_another_shell_wraps_the_command() {
        let opts = Options { source: "/etc/crontab".into(), system: true, notify: Some("ops-mail".into()), user: None };
        let out = import(
            "SHELL=/bin/bash\nMAILTO=root\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n",
            &opts,
        )
        .expect("imports");
        assert!(out.contains("command = \"exec /bin/bash -c 'cd / && run-parts --report /etc/cron.hourly'\""), "{out}");
        assert!(out.contains("user = \"root\"\nnotify = \"ops-mail\"\n"), "{out}");
        assert!(import("@reboot root\n", &opts).is_err(), "no command");
    }
}
