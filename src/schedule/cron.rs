//! Cron expressions: parsing, and the next fire after an instant.
//!
//! The contract is `docs/cron.md`: Vixie/cronie semantics (the day rule where a
//! field starting with `*` is unrestricted), names, macros, `L`, `NL`, `N#k`, and explicit rules
//! for daylight-saving changes. No crate implements that contract (the `cron` crate numbers
//! weekdays differently and misorders the repeated hour; `croner` differs on `*/n` and on
//! fixed-time jobs at DST), so the engine is ours.
//!
//! Fields are bitmasks, so finding the next matching minute is a few shifts and
//! `trailing_zeros`. Time zones come in through [`ZoneTable`] segments: inside a segment local
//! time is UTC plus a constant, so the search is done on naive local seconds and shifted back.
//! The DST rules only act at segment boundaries:
//! - a *wildcard job* (minute or hour field starting with `*`) fires at every instant whose
//!   local time matches, so in a gap nothing happens and in a fold both passes fire;
//! - a *fixed-time job* skips local times that repeat an earlier segment (the second pass of a
//!   fold), and fires once at the start of a segment when a matching local time was skipped by
//!   the gap just before it.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use super::zone::{Segment, ZoneTable};

/// How far ahead a search looks before deciding an expression never fires: 400 years is a
/// whole Gregorian cycle, so anything that can fire does within it.
const HORIZON_SECS: i64 = 400 * 366 * 86_400;
const DAY: i64 = 86_400;
/// Days from 0001-01-01 (chrono's "day 1 of the common era") to 1970-01-01, minus one.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// A parse error, with the byte offset in the expression where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CronError {
    pub offset: usize,
    pub message: String,
}

impl CronError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        CronError { offset, message: message.into() }
    }
}

/// The parsed fields of a cron expression, independent of any zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// `L` in day-of-month: the last day of the month.
    last_day: bool,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    /// `NL`: bit N set means "the last weekday N of the month".
    last_weekdays: u8,
    /// `N#k`: bit k-1 of `nth_weekdays[N]` means "the k-th weekday N of the month".
    nth_weekdays: [u8; 7],
    /// Day-of-month text starts with `*`: unrestricted for the day rule.
    day_star: bool,
    /// Day-of-week text starts with `*`.
    weekday_star: bool,
    /// A day must match both day fields even when both are restricted (`day_match = "both"`,
    /// Celery's rule), instead of either (Vixie cron's).
    both_days: bool,
    /// Minute or hour text starts with `*`: the job is a wildcard job for the DST rules.
    wildcard: bool,
}

/// What a cron expression text means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `@reboot`: once, when the daemon starts.
    Reboot,
    Fields(CronExpr),
}

/// Parses a cron expression (five fields or a macro).
pub fn parse(text: &str) -> Result<Parsed, CronError> {
    let trimmed = text.trim_start();
    let lead = text.len() - trimmed.len();
    let trimmed = trimmed.trim_end();
    if trimmed.is_empty() {
        return Err(CronError::new(0, "empty cron expression"));
    }
    if let Some(name) = trimmed.strip_prefix('@') {
        let expanded = match name.to_ascii_lowercase().as_str() {
            "reboot" => return Ok(Parsed::Reboot),
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                return Err(CronError::new(
                    lead,
                    format!(
                        "unknown macro \"{trimmed}\" (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot)"
                    ),
                ));
            }
        };
        return parse(expanded).map_err(|e| CronError::new(lead, e.message));
    }

    let mut fields = Vec::with_capacity(5);
    let mut pos = 0;
    for part in text.split([' ', '\t']) {
        if !part.is_empty() {
            fields.push((pos, part));
        }
        pos += part.len() + 1;
    }
    if fields.len() != 5 {
        let hint = if fields.len() == 6 {
            "; beatd has no seconds field (use `every = \"30s\"` for sub-minute schedules)"
        } else {
            ""
        };
        return Err(CronError::new(
            lead,
            format!("expected 5 fields (minute hour day-of-month month day-of-week), found {}{hint}", fields.len()),
        ));
    }

    let (mo, m) = fields[0];
    let (ho, h) = fields[1];
    let (dmo, dm) = fields[2];
    let (mno, mn) = fields[3];
    let (dwo, dw) = fields[4];
    let minutes = parse_field(m, mo, &MINUTE)?.bits;
    let hours = parse_field(h, ho, &HOUR)?.bits as u32;
    let dom = parse_field(dm, dmo, &DAY_OF_MONTH)?;
    let months = parse_field(mn, mno, &MONTH)?.bits as u16;
    let dow = parse_field(dw, dwo, &DAY_OF_WEEK)?;
    // 7 is Sunday too.
    let mut weekdays = dow.bits as u8 & 0x7f;
    if dow.bits & (1 << 7) != 0 {
        weekdays |= 1;
    }
    Ok(Parsed::Fields(CronExpr {
        minutes,
        hours,
        days: dom.bits as u32,
        last_day: dom.last,
        months,
        weekdays,
        last_weekdays: dow.last_weekdays,
        nth_weekdays: dow.nth,
        day_star: dm.starts_with('*'),
        weekday_star: dw.starts_with('*'),
        both_days: false,
        wildcard: m.starts_with('*') || h.starts_with('*'),
    }))
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// `L` allowed (day of month), `NL` and `N#k` allowed (day of week).
    dom_ext: bool,
    dow_ext: bool,
}

const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], dom_ext: false, dow_ext: false };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], dom_ext: false, dow_ext: false };
const DAY_OF_MONTH: FieldSpec =
    FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], dom_ext: true, dow_ext: false };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    dom_ext: false,
    dow_ext: false,
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    dom_ext: false,
    dow_ext: true,
};

#[derive(Default)]
struct Field {
    bits: u64,
    last: bool,
    last_weekdays: u8,
    nth: [u8; 7],
}

fn parse_field(text: &str, offset: usize, spec: &FieldSpec) -> Result<Field, CronError> {
    let mut field = Field::default();
    let mut pos = offset;
    for item in text.split(',') {
        parse_item(item, pos, spec, &mut field)?;
        pos += item.len() + 1;
    }
    Ok(field)
}

fn parse_item(item: &str, at: usize, spec: &FieldSpec, field: &mut Field) -> Result<(), CronError> {
    let err = |off: usize, msg: String| CronError::new(at + off, format!("{} field: {msg}", spec.name));
    if item.is_empty() {
        return Err(err(0, "empty list item".into()));
    }
    if spec.dom_ext && item.eq_ignore_ascii_case("L") {
        field.last = true;
        return Ok(());
    }
    if spec.dow_ext {
        if let Some(n) = item.strip_suffix(['L', 'l']).filter(|n| !n.is_empty()) {
            let wd = parse_value(n, spec).map_err(|m| err(0, m))? % 7;
            field.last_weekdays |= 1 << wd;
            return Ok(());
        }
        if let Some((n, k)) = item.split_once('#') {
            let wd = parse_value(n, spec).map_err(|m| err(0, m))? % 7;
            let k_at = n.len() + 1;
            let k: u32 = match k.parse() {
                Ok(k @ 1..=5) => k,
                _ => return Err(err(k_at, format!("\"#{k}\": the occurrence after # must be 1 to 5"))),
            };
            field.nth[wd as usize] |= 1 << (k - 1);
            return Ok(());
        }
    }
    if item == "?" {
        return Err(err(0, "\"?\" is Quartz syntax; use \"*\"".into()));
    }

    let (range, step) = match item.split_once('/') {
        Some((r, s)) => {
            let step_at = r.len() + 1;
            match s.parse::<u32>() {
                Ok(0) => return Err(err(step_at, "a step of 0 never advances".into())),
                Ok(n) if n <= spec.max => (r, Some((n, step_at))),
                Ok(n) => return Err(err(step_at, format!("step {n} is larger than the field's range"))),
                Err(_) => return Err(err(step_at, format!("\"{s}\" is not a step (a whole number)"))),
            }
        }
        None => (item, None),
    };

    let (lo, hi) = if range == "*" {
        (spec.min, if spec.dow_ext { 6 } else { spec.max })
    } else if let Some((a, b)) = range.split_once('-') {
        let lo = parse_value(a, spec).map_err(|m| err(0, m))?;
        let mut hi = parse_value(b, spec).map_err(|m| err(a.len() + 1, m))?;
        // In day-of-week, a range ending on Sunday wraps: `fri-sun` is 5-7.
        if spec.dow_ext && hi == 0 && lo > 0 {
            hi = 7;
        }
        if lo > hi {
            return Err(err(0, format!("range \"{range}\" is reversed")));
        }
        (lo, hi)
    } else {
        let v = parse_value(range, spec).map_err(|m| err(0, m))?;
        if step.is_some() {
            return Err(err(
                0,
                format!("\"{item}\": a step needs a range, e.g. \"{range}-{}/..\" or \"*/..\"", spec.max),
            ));
        }
        (v, v)
    };
    let step = step.map_or(1, |(n, _)| n);
    let mut v = lo;
    while v <= hi {
        field.bits |= 1 << v;
        v += step;
    }
    Ok(())
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    if let Some(i) = spec.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + if spec.names.len() == 12 { 1 } else { 0 });
    }
    match text.parse::<u32>() {
        Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is out of range {}-{}", spec.min, spec.max)),
        Err(_) if text.is_empty() => Err("missing value".into()),
        Err(_) => Err(format!("\"{text}\" is not a number{}", if spec.names.is_empty() { "" } else { " or a name" })),
    }
}

impl CronExpr {
    /// The expression with Celery's day rule: a day matches when it matches both day fields,
    /// also when both are restricted (where Vixie cron takes a day that matches either).
    pub fn with_both_days(mut self) -> CronExpr {
        self.both_days = true;
        self
    }

    /// Whether both day fields are restricted (neither starts with `*`): only then do the two
    /// day rules differ.
    pub fn restricts_both_days(&self) -> bool {
        !self.day_star && !self.weekday_star
    }

    /// Whether the job counts as a wildcard job for the DST rules.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether a local wall time matches every field (seconds ignored). The iterator does not
    /// use this: it is the plain definition, for tests and tools that check the iterator.
    pub fn matches(&self, local: chrono::NaiveDateTime) -> bool {
        use chrono::Timelike;
        self.minutes & (1 << local.minute()) != 0
            && self.hours & (1 << local.hour()) != 0
            && self.months & (1 << local.month()) != 0
            && self.day_matches(local.date())
    }

    #[inline]
    fn day_matches(&self, date: NaiveDate) -> bool {
        let d = date.day();
        let wd = date.weekday().num_days_from_sunday();
        let dim = days_in_month(date.year(), date.month());
        let dom = self.days & (1 << d) != 0 || (self.last_day && d == dim);
        let dow = self.weekdays & (1 << wd) != 0
            || (self.last_weekdays & (1 << wd) != 0 && d + 7 > dim)
            || (self.nth_weekdays[wd as usize] & (1 << ((d - 1) / 7)) != 0);
        if self.both_days || self.day_star || self.weekday_star { dom && dow } else { dom || dow }
    }

    /// The days of a month that match, as bits 1..=31. `weekday` is the weekday (Sunday = 0)
    /// of day `day`, which locates the month's weekday pattern.
    #[inline]
    fn month_days(&self, year: i32, month: u32, weekday: u32, day: u32) -> u32 {
        let dim = days_in_month(year, month);
        let in_month = (u32::MAX >> (31 - dim)) & !1; // bits 1..=dim
        // Weekday of day 1, and a 7-bit pattern: bit i set when day i+1 has a wanted weekday.
        let first = (weekday + 35 - (day - 1) % 7) % 7;
        let week = |wanted: u8| -> u32 {
            let w = u32::from(wanted);
            ((w >> first) | (w << (7 - first))) & 0x7f
        };
        let repeat = |p: u32| (p | p << 7 | p << 14 | p << 21 | p << 28) << 1;
        let mut dom = self.days & in_month;
        if self.last_day {
            dom |= 1 << dim;
        }
        let mut dow = repeat(week(self.weekdays)) & in_month;
        if self.last_weekdays != 0 {
            // The last seven days hold exactly one of each weekday.
            dow |= repeat(week(self.last_weekdays)) & in_month & !(u32::MAX >> (32 - (dim - 6)));
        }
        for (wd, &nth) in self.nth_weekdays.iter().enumerate() {
            let mut k = nth;
            while k != 0 {
                let occurrence = k.trailing_zeros();
                k &= k - 1;
                let d = 1 + (wd as u32 + 7 - first) % 7 + 7 * occurrence;
                if d <= dim {
                    dow |= 1 << d;
                }
            }
        }
        if self.both_days || self.day_star || self.weekday_star { dom & dow } else { dom | dow }
    }

    /// The first whole local minute `t` with `start <= t < end` that matches, in naive local
    /// seconds (local wall time read as if it were UTC).
    fn next_local(&self, start: i64, end: i64) -> Option<i64> {
        let t = start.div_euclid(60) * 60 + if start.rem_euclid(60) == 0 { 0 } else { 60 };
        if t >= end {
            return None;
        }
        let end = end.min(t.saturating_add(HORIZON_SECS));
        let mut days = t.div_euclid(DAY);
        let sod = t.rem_euclid(DAY);
        let mut hour = (sod / 3600) as u32;
        let mut minute = (sod % 3600 / 60) as u32;
        let mut date = date_from_days(days)?;
        loop {
            if days * DAY >= end {
                return None;
            }
            let month = date.month();
            if self.months & (1 << month) == 0 {
                // Jump to the first day of the next allowed month.
                let later = self.months >> (month + 1);
                let (y, m) = if later != 0 {
                    (date.year(), month + 1 + later.trailing_zeros())
                } else {
                    (date.year() + 1, self.months.trailing_zeros())
                };
                date = NaiveDate::from_ymd_opt(y, m, 1)?;
                days = days_from_date(date);
                hour = 0;
                minute = 0;
                continue;
            }
            // The month's matching days as a bitmask: jump straight to the next one.
            let day = date.day();
            let ahead = self.month_days(date.year(), month, date.weekday().num_days_from_sunday(), day) >> day;
            if ahead == 0 {
                date = first_of_next_month(date)?;
                days = days_from_date(date);
                hour = 0;
                minute = 0;
                continue;
            }
            let skip = ahead.trailing_zeros();
            if skip > 0 {
                date = date.checked_add_days(chrono::Days::new(u64::from(skip)))?;
                days += i64::from(skip);
                hour = 0;
                minute = 0;
            }
            loop {
                let hours = self.hours >> hour;
                if hours == 0 {
                    break;
                }
                let h = hour + hours.trailing_zeros();
                if h != hour {
                    minute = 0;
                }
                let minutes = self.minutes >> minute;
                if minutes != 0 {
                    let m = minute + minutes.trailing_zeros();
                    let found = days * DAY + i64::from(h) * 3600 + i64::from(m) * 60;
                    return (found < end).then_some(found);
                }
                hour = h + 1;
                minute = 0;
                if hour >= 24 {
                    break;
                }
            }
            date = date.succ_opt()?;
            days += 1;
            hour = 0;
            minute = 0;
        }
    }
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if date.month() == 12 { (date.year() + 1, 1) } else { (date.year(), date.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1)
}

fn date_from_days(days: i64) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(days + UNIX_EPOCH_DAYS_FROM_CE).ok()?)
}

fn days_from_date(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A cron expression evaluated in a time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expr: CronExpr,
    zone: Arc<ZoneTable>,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule").field("expr", &self.expr).field("zone", &self.zone.tz().name()).finish()
    }
}

impl CronSchedule {
    pub fn new(expr: CronExpr, tz: Tz) -> Self {
        CronSchedule { expr, zone: ZoneTable::for_zone(tz) }
    }

    pub fn tz(&self) -> Tz {
        self.zone.tz()
    }

    /// The first fire strictly after `after`, or `None` if there is none in the next 400 years.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fires are whole local minutes, so a fractional `after` behaves like its whole second.
        let after = after.timestamp();
        let mut seg = self.zone.segment_at(after);
        let horizon = after.saturating_add(HORIZON_SECS);
        loop {
            if let Some(t) = self.next_in_segment(&seg, after) {
                return DateTime::from_timestamp(t, 0);
            }
            seg = self.zone.next_segment(&seg)?;
            if seg.start > horizon {
                return None;
            }
        }
    }

    /// The first fire in `seg` strictly after UTC second `after`, by the DST rules.
    #[inline]
    fn next_in_segment(&self, seg: &Segment, after: i64) -> Option<i64> {
        let off = seg.offset;
        let mut lo = after.max(seg.start.saturating_sub(1)).saturating_add(1).saturating_add(off);
        let hi = seg.end.saturating_add(off);
        if !self.expr.wildcard
            && let Some(prev) = seg.prev_offset
        {
            let boundary_local = seg.start + prev;
            if prev < off {
                // A gap just before this segment: local times [start+prev, start+off) never
                // happened. A fixed-time job that wanted one of them fires once, at the start.
                if seg.start > after && self.expr.next_local(boundary_local, seg.start + off).is_some() {
                    return Some(seg.start);
                }
            } else {
                // A fold: local times before start+prev already happened in the first pass.
                lo = lo.max(boundary_local);
            }
        }
        self.expr.next_local(lo, hi).map(|local| local - off)
    }
}

#[cfg(test)]
#[path = "cron_semantics_tests.rs"]
mod semantics_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(text: &str) -> CronExpr {
        match parse(text) {
            Ok(Parsed::Fields(e)) => e,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn err(text: &str) -> (usize, String) {
        let e = parse(text).expect_err(text);
        (e.offset, e.message)
    }

    #[test]
    fn fields_and_names() {
        let e = expr("*/15 9-17 * jan,JUL mon-fri");
        assert_eq!(e.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(e.hours, 0b11_1111_1110_0000_0000);
        assert_eq!(e.months, 1 << 1 | 1 << 7);
        assert_eq!(e.weekdays, 0b011_1110);
        assert!(e.wildcard && e.day_star && !e.weekday_star);
        assert_eq!(expr("0 0 * * 7").weekdays, 1);
        assert_eq!(expr("0 0 * * fri-sun").weekdays, 1 | 1 << 5 | 1 << 6);
        assert_eq!(expr("0 0 * * 5-0").weekdays, 1 | 1 << 5 | 1 << 6);
        assert_eq!(expr("0 0 * * */2").weekdays, 1 | 1 << 2 | 1 << 4 | 1 << 6);
        assert_eq!(expr("0 0 1-10/3 * *").days, 1 << 1 | 1 << 4 | 1 << 7 | 1 << 10);
        assert_eq!(expr("0 0 * * 5L").last_weekdays, 1 << 5);
        assert_eq!(expr("0 0 * * 1#2,fri#5").nth_weekdays[1], 0b10);
        assert_eq!(expr("0 0 * * 1#2,fri#5").nth_weekdays[5], 0b1_0000);
        assert!(expr("0 0 L * *").last_day);
        assert!(expr("0 0 1,L * *").last_day);
        assert!(!expr("30 2 * * *").wildcard);
        assert!(expr("@hourly").wildcard);
        assert_eq!(expr("@yearly"), expr("0 0 1 1 *"));
        assert_eq!(expr("@annually"), expr("0 0 1 1 *"));
        assert_eq!(expr("@monthly"), expr("0 0 1 * *"));
        assert_eq!(expr("@weekly"), expr("0 0 * * 0"));
        assert_eq!(expr("@daily"), expr("0 0 * * *"));
        assert_eq!(expr("@midnight"), expr("0 0 * * *"));
        assert_eq!(expr("  0  0\t* * *  "), expr("0 0 * * *"));
        assert_eq!(parse("@reboot"), Ok(Parsed::Reboot));
    }

    #[test]
    fn every_error_points_at_its_spot() {
        assert_eq!(err(""), (0, "empty cron expression".into()));
        assert_eq!(
            err("@often").1,
            "unknown macro \"@often\" (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot)"
        );
        assert_eq!(
            err("* * * *"),
            (0, "expected 5 fields (minute hour day-of-month month day-of-week), found 4".into())
        );
        assert_eq!(
            err("0 * * * * *").1,
            "expected 5 fields (minute hour day-of-month month day-of-week), found 6; beatd has no seconds field (use `every = \"30s\"` for sub-minute schedules)"
        );
        assert_eq!(err("60 * * * *"), (0, "minute field: 60 is out of range 0-59".into()));
        assert_eq!(err("0 24 * * *"), (2, "hour field: 24 is out of range 0-23".into()));
        assert_eq!(err("0 0 0 * *"), (4, "day-of-month field: 0 is out of range 1-31".into()));
        assert_eq!(err("0 0 * 13 *"), (6, "month field: 13 is out of range 1-12".into()));
        assert_eq!(err("0 0 * * 8"), (8, "day-of-week field: 8 is out of range 0-7".into()));
        assert_eq!(err("*/0 * * * *"), (2, "minute field: a step of 0 never advances".into()));
        assert_eq!(err("5/10 * * * *").1, "minute field: \"5/10\": a step needs a range, e.g. \"5-59/..\" or \"*/..\"");
        assert_eq!(err("0 10-2 * * *"), (2, "hour field: range \"10-2\" is reversed".into()));
        assert_eq!(err("0 0 * * 1#6"), (10, "day-of-week field: \"#6\": the occurrence after # must be 1 to 5".into()));
        assert_eq!(err("0 0 * foo *"), (6, "month field: \"foo\" is not a number or a name".into()));
        assert_eq!(err("0 0 ? * *"), (4, "day-of-month field: \"?\" is Quartz syntax; use \"*\"".into()));
        assert_eq!(err("0,,5 * * * *"), (2, "minute field: empty list item".into()));
        assert_eq!(err("1-x * * * *"), (2, "minute field: \"x\" is not a number".into()));
        assert_eq!(err("*/x * * * *"), (2, "minute field: \"x\" is not a step (a whole number)".into()));
        assert_eq!(err("0 0 * * L"), (8, "day-of-week field: \"L\" is not a number or a name".into()));
        assert_eq!(err("0 0 * * 1-"), (10, "day-of-week field: missing value".into()));
        assert_eq!(err("*/99 * * * *"), (2, "minute field: step 99 is larger than the field's range".into()));
    }

    /// Found by the `cron` fuzz target: in 1850 Berlin's tz-database offset is its local mean
    /// time, +0:53:28. beatd's zone tables start in 1900 and keep that year's +1:00 before it
    /// (docs/cron.md, "Time zones"): fires stay on whole local minutes of that offset.
    #[test]
    fn before_1900_the_offset_of_1900_holds() {
        let s = CronSchedule::new(expr("0 0 * * *"), chrono_tz::Europe::Berlin);
        let from = DateTime::parse_from_rfc3339("1850-06-01T12:00:00Z").expect("valid").with_timezone(&Utc);
        let next = s.next_after(from).expect("fires");
        assert_eq!(next.to_rfc3339(), "1850-06-01T23:00:00+00:00");
        let far = DateTime::parse_from_rfc3339("2400-07-01T12:00:00Z").expect("valid").with_timezone(&Utc);
        // After 2199 the last offset of the table (winter, +1:00) holds, summer or not.
        assert_eq!(s.next_after(far).expect("fires").to_rfc3339(), "2400-07-01T23:00:00+00:00");
    }

    #[test]
    fn next_local_handles_month_and_leap_day_skips() {
        // 0 0 29 2 *: 2024-02-29 then 2028-02-29.
        let e = expr("0 0 29 2 *");
        let start = 1_709_251_200; // 2024-03-01T00:00:00 local
        let t = e.next_local(start, i64::MAX).expect("fires");
        assert_eq!(DateTime::from_timestamp(t, 0).map(|d| d.to_rfc3339()), Some("2028-02-29T00:00:00+00:00".into()));
        assert_eq!(expr("0 0 30 2 *").next_local(start, i64::MAX), None);
    }
}
