//! A job's table, read into a [`Job`]: its common keys, its schedule, its action.
//!
//! Each phase reads its own keys and reports its own errors, so a job with a bad zone, a bad
//! expression and an unknown key gets all three in one `beatd check`. The action's keys are
//! [`super::actions`]'; the execution policy's are here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::actions::{self, ParseContext};
use super::diag::{Diags, Section, hint};
use super::table::{self, Str, Table};
use crate::job::{HistoryMode, Job, NotifyOn, Retention};
use crate::jobs::{ACTIONS, Action};
use crate::notifications;
use crate::policy::{CatchUp, Overlap, Policy};
use crate::schedule::{CronSchedule, Interval, Schedule, cron};

/// One copy of what many jobs write alike (their schedule text, their policy, the notifier
/// they name), shared between them for the daemon's life: at 100 000 jobs, most of which say
/// `every = "1m"` with the default policy, that is most of a job's size.
#[derive(Debug, Default)]
pub(super) struct Shared {
    texts: HashSet<Arc<str>>,
    policies: HashSet<Arc<Policy>>,
    /// Cron schedules by zone and text, parsed (and checked to fire) once.
    /// By zone and day rule, then text: the schedule, and whether its text carries the mark.
    crons: HashMap<(Tz, bool), CronsByText>,
}

impl Shared {
    fn text(&mut self, text: String) -> Arc<str> {
        if let Some(t) = self.texts.get(text.as_str()) {
            return t.clone();
        }
        let t: Arc<str> = text.into();
        self.texts.insert(t.clone());
        t
    }

    fn policy(&mut self, policy: Policy) -> Arc<Policy> {
        if let Some(p) = self.policies.get(&policy) {
            return p.clone();
        }
        let p = Arc::new(policy);
        self.policies.insert(p.clone());
        p
    }
}

/// Cron schedules by their text, each with whether its text carries [`BOTH_DAYS_MARK`].
type CronsByText = HashMap<Box<str>, (Schedule, bool)>;

/// Reads the job `name` from its table `t`: `None` when it has errors (all of them in `d`).
pub(super) fn job(
    name: &str,
    t: &mut Table<'_, '_>,
    d: &mut Diags,
    cx: &ParseContext<'_>,
    default_zone: Tz,
    default_history: Retention,
    shared: &mut Shared,
) -> Option<Job> {
    let enabled = t.bool(d, "enabled").unwrap_or(true);
    let history = retention(t, d, default_history);
    let policy = shared.policy(policy(t, d));
    let notify = notify_target(t, d).map(|n| shared.text(n));
    let notify_on = notify_on(t, d);
    let timezone = match t.str(d, "timezone") {
        Some(s) => zone(t, d, &s),
        None => Some(default_zone),
    };
    let schedule = schedule(t, d, timezone, shared);
    let action = job_action(t, d, cx);
    if action.is_some() {
        t.finish(d, &[]);
    }
    let (schedule, schedule_text) = schedule?;
    let schedule_text = shared.text(schedule_text);
    let mut action = action.flatten()?;
    // A check's own request timeout is the job's timeout.
    if let Some(timeout) = policy.timeout {
        match &mut action {
            Action::HttpCheck(h) => h.timeout = timeout,
            Action::TcpCheck(c) => c.timeout = timeout,
            Action::SqlCheck(c) => c.timeout = timeout,
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
        history,
        definition: uuid::Uuid::nil(),
    })
}

/// `history` and `history_keep_runs`, over `defaults` (the scheduler's, for a job; the
/// built-in ones, for `[scheduler]`).
pub(super) fn retention(t: &mut Table<'_, '_>, d: &mut Diags, defaults: Retention) -> Retention {
    let modes = [("all", HistoryMode::All), ("failures", HistoryMode::Failures), ("off", HistoryMode::Off)];
    let mode = t.choice(d, "history", "history", &modes).unwrap_or(defaults.mode);
    let max_runs = match t.integer(d, "history_keep_runs") {
        Some((n, span)) => match u64::try_from(n) {
            Ok(n) if n > 0 => std::num::NonZeroU64::new(n),
            _ => {
                t.error(d, span, "\"history_keep_runs\" must be 1 or more");
                defaults.max_runs
            }
        },
        None => defaults.max_runs,
    };
    Retention { mode, max_runs }
}

/// `notify = "NAME"`, which must name a `[notifiers.NAME]`.
fn notify_target(t: &mut Table<'_, '_>, d: &mut Diags) -> Option<String> {
    let n = t.str(d, "notify")?;
    t.refer(d, n.span.clone(), Section::Notifiers, n.value);
    Some(n.value.to_string())
}

/// `notify_on = ["failure", "recovery"]`: which changes are notified (both by default).
fn notify_on(t: &mut Table<'_, '_>, d: &mut Diags) -> NotifyOn {
    let Some((events, _)) = t.str_list(d, "notify_on") else { return NotifyOn::default() };
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

/// `cron` or `every` (with `offset`): exactly one of them.
fn schedule(
    t: &mut Table<'_, '_>,
    d: &mut Diags,
    timezone: Option<Tz>,
    shared: &mut Shared,
) -> Option<(Schedule, String)> {
    let cron = t.str(d, "cron");
    let every = t.str(d, "every");
    let offset = t.str(d, "offset");
    let both_days = t.choice(d, "day_match", "day_match", &[("either", false), ("both", true)]).unwrap_or(false);
    if let (Some(span), None) = (t.key_span("day_match"), &cron) {
        t.error(d, span, "\"day_match\" goes with \"cron\": it says how the two day fields combine");
    }
    match (&cron, &every) {
        (Some(c), Some(e)) => {
            let span = t.key_span("every").unwrap_or(e.span.clone());
            t.error(d, span, "set either \"cron\" or \"every\", not both");
            // Still report what is wrong with either value, so one run shows everything.
            if let Some(tz) = timezone {
                cron_schedule(t, d, c, tz, both_days, shared);
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
            cron_schedule(t, d, c, timezone?, both_days, shared)
        }
        (None, Some(e)) => interval_schedule(t, d, e, offset.clone()),
    }
}

/// `action` and the keys of that action (`Some`, with `None` inside when they have errors). A
/// missing or unknown action is one error, without a flood of "unknown key" errors for the keys
/// that would be fine once it is fixed: the table is then finished here (`None`).
fn job_action(t: &mut Table<'_, '_>, d: &mut Diags, cx: &ParseContext<'_>) -> Option<Option<Action>> {
    match t.str(d, "action") {
        None => {
            if t.key_span("action").is_none() {
                t.error(d, t.span.clone(), format!("missing key \"action\" (one of: {})", ACTIONS.join(", ")));
            }
            t.finish(d, &actions::all_keys());
            None
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
            t.finish(d, &actions::all_keys());
            None
        }
        Some(a) => Some(actions::action(a.value, t, d, cx)),
    }
}

/// The execution policy's keys, for every action.
pub fn policy(t: &mut Table<'_, '_>, d: &mut Diags) -> Policy {
    let mut p = Policy::default();
    if let Some((v, span)) = t.duration(d, "timeout") {
        if v.is_zero() {
            t.error(d, span, "\"timeout\" must be more than 0s");
        }
        p.timeout = Some(v);
    }
    let overlaps =
        [("skip", Overlap::Skip), ("queue", Overlap::Queue), ("allow", Overlap::Allow), ("replace", Overlap::Replace)];
    if let Some(o) = t.choice(d, "overlap", "overlap policy", &overlaps) {
        p.overlap = o;
    }
    if let Some((n, span)) = t.integer(d, "retries") {
        match u32::try_from(n) {
            Ok(n) if n <= 100 => p.retries = n,
            _ => t.error(d, span, "\"retries\" must be from 0 to 100"),
        }
    }
    if let Some((v, _)) = t.duration(d, "retry_delay") {
        p.retry_delay = v;
    }
    if let Some((v, _)) = t.duration(d, "retry_max_delay") {
        p.retry_max_delay = v;
    }
    let catch_ups = [("skip", CatchUp::Skip), ("latest", CatchUp::Latest), ("all", CatchUp::All)];
    if let Some(c) = t.choice(d, "catch_up", "catch_up", &catch_ups) {
        p.catch_up = c;
    }
    if let Some((n, span)) = t.integer(d, "catch_up_limit") {
        match usize::try_from(n) {
            Ok(n) if (1..=100_000).contains(&n) => p.catch_up_limit = n,
            _ => t.error(d, span, "\"catch_up_limit\" must be from 1 to 100000"),
        }
    }
    if let Some((v, _)) = t.duration(d, "catch_up_window") {
        p.catch_up_window = Some(v);
    }
    if let Some((v, span)) = t.duration(d, "jitter") {
        if v.as_millis() == 0 {
            t.error(d, span, "\"jitter\" must be at least 1ms");
        } else {
            p.jitter = Some(v);
        }
    }
    p
}

pub(super) fn zone(t: &Table<'_, '_>, d: &mut Diags, s: &Str<'_>) -> Option<Tz> {
    parse_zone(s.value).map_err(|m| t.error(d, s.span.clone(), m.to_string())).ok()
}

/// A zone by its IANA name, with a hint for near misses.
pub fn parse_zone(name: &str) -> Result<Tz, UnknownZone> {
    name.parse::<Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
        UnknownZone { name: name.to_string(), hint: hint(name, names) }
    })
}

/// A zone name the IANA database does not have, with the nearest one when it is a typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone \"{name}\"{hint}")]
pub struct UnknownZone {
    pub name: String,
    /// ` (did you mean "..."?)`, or empty.
    pub hint: String,
}

/// What a schedule's text says when `day_match = "both"` changes its meaning.
pub const BOTH_DAYS_MARK: &str = " (day_match both)";

/// A fixed instant to test "does this expression ever fire", so checking is repeatable.
fn probe_instant() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() // 2026-01-01
}

/// Why a schedule text was refused; `at` is the byte offset in the text, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub at: Option<usize>,
    pub message: String,
}

/// Builds a cron schedule from its text, refusing expressions that never fire. With
/// `both_days` (`day_match = "both"`) a day must match both day fields; where that changes the
/// meaning (both are restricted), the schedule's text says so.
pub fn cron_from_text(text: &str, tz: Tz, both_days: bool) -> Result<(Schedule, String), ScheduleError> {
    match cron::parse(text) {
        Ok(cron::Parsed::Reboot) => Ok((Schedule::Reboot, "@reboot".into())),
        Ok(cron::Parsed::Fields(expr)) => {
            let marked = both_days && expr.restricts_both_days();
            let expr = if both_days { expr.with_both_days() } else { expr };
            let s = CronSchedule::new(expr, tz);
            if s.next_after(probe_instant()).is_none() {
                return Err(ScheduleError { at: None, message: format!("cron expression \"{text}\" never fires") });
            }
            let mut text = text.trim().to_string();
            if marked {
                text.push_str(BOTH_DAYS_MARK);
            }
            Ok((Schedule::Cron(Arc::new(s)), text))
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

fn cron_schedule(
    t: &Table<'_, '_>,
    d: &mut Diags,
    c: &Str<'_>,
    tz: Tz,
    both_days: bool,
    shared: &mut Shared,
) -> Option<(Schedule, String)> {
    if let Some((s, marked)) = shared.crons.get(&(tz, both_days)).and_then(|by_text| by_text.get(c.value)) {
        let mut text = c.value.trim().to_string();
        if *marked {
            text.push_str(BOTH_DAYS_MARK);
        }
        return Some((s.clone(), text));
    }
    let built = cron_from_text(c.value, tz, both_days)
        .map_err(|e| {
            // Point inside the string when it is written plainly (no escapes).
            let raw = d.text().get(c.span.clone()).unwrap_or("");
            let at = match e.at {
                Some(off) if raw.len() == c.value.len() + 2 => c.span.start + 1 + off,
                _ => c.span.start,
            };
            t.error(d, at..at, e.message);
        })
        .ok()?;
    let marked = built.1.ends_with(BOTH_DAYS_MARK);
    shared.crons.entry((tz, both_days)).or_default().insert(c.value.into(), (built.0.clone(), marked));
    Some(built)
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
