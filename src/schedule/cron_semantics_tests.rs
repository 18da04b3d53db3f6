//! The contract of `docs/cron.md`, row by row (its table is read from the page itself), and
//! property tests of the
//! iterator against a brute-force, minute-by-minute reference that reads offsets straight
//! from chrono-tz (not from our segment tables).

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::{CronSchedule, Parsed, parse};
use crate::schedule::zone::ZoneTable;

fn schedule(expr: &str, zone: &str) -> CronSchedule {
    let tz: Tz = zone.parse().expect("zone");
    match parse(expr) {
        Ok(Parsed::Fields(e)) => CronSchedule::new(e, tz),
        other => panic!("{expr}: {other:?}"),
    }
}

/// The expression with `day_match = "both"` when `both`.
fn expr_with(expr: &str, both: bool) -> super::CronExpr {
    match parse(expr) {
        Ok(Parsed::Fields(e)) if both => e.with_both_days(),
        Ok(Parsed::Fields(e)) => e,
        other => panic!("{expr}: {other:?}"),
    }
}

#[test]
fn day_match_both_is_celerys_rule_either_is_vixies() {
    let utc = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
    let list = |both: bool| {
        let s = CronSchedule::new(expr_with("0 9 13 * 5", both), chrono_tz::UTC);
        let mut t = utc("2026-01-01T00:00:00Z");
        let mut out = Vec::new();
        while let Some(next) = s.next_after(t).filter(|n| *n < utc("2027-01-01T00:00:00Z")) {
            out.push(next.format("%m-%d").to_string());
            t = next;
        }
        out
    };
    // 2026's Friday the 13ths.
    assert_eq!(list(true), ["02-13", "03-13", "11-13"]);
    let either = list(false);
    assert_eq!(either.len(), 52 + 12 - 3, "every Friday and every 13th, each day once");
    assert!(either.contains(&"01-02".to_string()) && either.contains(&"01-13".to_string()));
    // With a day field left at `*` the rules agree.
    assert!(!expr_with("0 9 * * 5", false).restricts_both_days());
    let (a, b) = (expr_with("0 9 * * 5", true), expr_with("0 9 * * 5", false));
    let d = chrono::NaiveDate::from_ymd_opt(2026, 3, 6).expect("date").and_hms_opt(9, 0, 0).expect("time");
    assert_eq!(a.matches(d), b.matches(d));
}

fn fires(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
    let s = schedule(expr, zone);
    let tz = s.tz();
    let mut t = DateTime::parse_from_rfc3339(after).expect("rfc3339").with_timezone(&Utc);
    let mut out = Vec::new();
    for _ in 0..n {
        t = s.next_after(t).expect("fires");
        let local = t.with_timezone(&tz);
        out.push(local.with_timezone(&local.offset().fix()).to_rfc3339());
    }
    out
}

/// Each row of the "Expected results" table, with the short forms written out.
#[test]
fn contract_table() {
    let rows: &[(&str, &str, &str, &[&str])] = &[
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00-05:00",
            &["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
        ),
        (
            "15,45 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00-05:00",
            &["2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00", "2026-03-09T02:45:00-04:00"],
        ),
        (
            "*/15 * * * *",
            "America/New_York",
            "2026-03-08T01:20:00-05:00",
            &[
                "2026-03-08T01:30:00-05:00",
                "2026-03-08T01:45:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T03:15:00-04:00",
            ],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00-04:00",
            &["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
        ),
        (
            "*/30 * * * *",
            "America/New_York",
            "2026-11-01T00:45:00-04:00",
            &[
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:30:00-05:00",
                "2026-11-01T02:00:00-05:00",
            ],
        ),
        ("30 1 * * *", "America/New_York", "2026-11-01T01:10:00-05:00", &["2026-11-02T01:30:00-05:00"]),
        (
            "0 9 * * 1-5",
            "Europe/Berlin",
            "2026-03-06T10:00:00+01:00",
            &["2026-03-09T09:00:00+01:00", "2026-03-10T09:00:00+01:00", "2026-03-11T09:00:00+01:00"],
        ),
        (
            "0 0 13 * 5",
            "UTC",
            "2026-01-01T00:00:00+00:00",
            &[
                "2026-01-02T00:00:00+00:00",
                "2026-01-09T00:00:00+00:00",
                "2026-01-13T00:00:00+00:00",
                "2026-01-16T00:00:00+00:00",
            ],
        ),
        (
            "0 0 */2 * 5",
            "UTC",
            "2026-01-01T00:00:00+00:00",
            &["2026-01-09T00:00:00+00:00", "2026-01-23T00:00:00+00:00", "2026-02-13T00:00:00+00:00"],
        ),
        (
            "0 0 L * *",
            "UTC",
            "2026-01-15T00:00:00+00:00",
            &["2026-01-31T00:00:00+00:00", "2026-02-28T00:00:00+00:00", "2026-03-31T00:00:00+00:00"],
        ),
        (
            "0 18 * * 5L",
            "UTC",
            "2026-01-01T00:00:00+00:00",
            &["2026-01-30T18:00:00+00:00", "2026-02-27T18:00:00+00:00"],
        ),
        (
            "0 10 * * 1#2",
            "UTC",
            "2026-01-01T00:00:00+00:00",
            &["2026-01-12T10:00:00+00:00", "2026-02-09T10:00:00+00:00"],
        ),
        (
            "30 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T12:00:00+10:30",
            &["2026-10-04T02:30:00+11:00", "2026-10-05T02:30:00+11:00"],
        ),
        (
            "0 0 * * *",
            "America/Santiago",
            "2026-09-05T12:00:00-04:00",
            &["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"],
        ),
    ];
    for (expr, zone, after, expected) in rows {
        assert_eq!(fires(expr, zone, after, expected.len()), *expected, "{expr} in {zone} after {after}");
    }
}

/// The table at the end of `docs/cron.md`, read from the page: the engine answers every row.
#[test]
fn the_table_in_docs_cron_md() {
    let page = include_str!("../../docs/cron.md");
    let table = page.split("## The table the tests check").nth(1).expect("the table's heading");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert!(rows.len() >= 20, "{} rows", rows.len());
    for row in rows {
        let [expr, zone, after, next] = row[..] else { panic!("a row of four cells: {row:?}") };
        let expr = expr.trim_matches('`');
        let expected: Vec<&str> = next.split(", ").collect();
        assert_eq!(fires(expr, zone, after, expected.len()), expected, "{expr} in {zone} after {after}");
    }
}

#[test]
fn more_dst_cases() {
    // Several fixed times in one gap merge into one fire, including one at the gap's end.
    assert_eq!(
        fires("0 2,3 * * *", "America/New_York", "2026-03-07T12:00:00-05:00", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    );
    // A fixed job in the fold, asked from inside the first pass, does not fire again.
    assert_eq!(fires("15 1 * * *", "America/New_York", "2026-11-01T01:20:00-04:00", 1), ["2026-11-02T01:15:00-05:00"]);
    // A wildcard job asked from inside the second pass carries on in the second pass.
    assert_eq!(
        fires("*/20 * * * *", "America/New_York", "2026-11-01T01:10:00-05:00", 3),
        ["2026-11-01T01:20:00-05:00", "2026-11-01T01:40:00-05:00", "2026-11-01T02:00:00-05:00"]
    );
    // Hourly in Lord Howe: the 30-minute fold repeats 01:30-02:00 local.
    assert_eq!(
        fires("30 * * * *", "Australia/Lord_Howe", "2026-04-05T01:00:00+11:00", 3),
        ["2026-04-05T01:30:00+11:00", "2026-04-05T01:30:00+10:30", "2026-04-05T02:30:00+10:30"]
    );
}

#[test]
fn impossible_dates_never_fire_and_rare_ones_do() {
    let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid");
    assert_eq!(schedule("0 0 30 2 *", "UTC").next_after(from), None);
    assert_eq!(schedule("0 0 31 4 *", "UTC").next_after(from), None);
    assert_eq!(schedule("0 0 31 4,6,9,11 *", "UTC").next_after(from), None);
    let leap = schedule("0 0 29 2 *", "UTC").next_after(from).expect("fires");
    assert_eq!(leap.to_rfc3339(), "2028-02-29T00:00:00+00:00");
    // Across 2100, which is not a leap year.
    let from2097 = Utc.with_ymd_and_hms(2097, 1, 1, 0, 0, 0).single().expect("valid");
    let next = schedule("0 0 29 2 *", "UTC").next_after(from2097).expect("fires");
    assert_eq!(next.to_rfc3339(), "2104-02-29T00:00:00+00:00");
    // Or-rule: a restricted weekday rescues an impossible day of month.
    assert!(schedule("0 0 30 2 1", "UTC").next_after(from).is_some());
}

// ---- property tests ----------------------------------------------------------------------

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/St_Johns",
];

fn offset_at(tz: Tz, t: DateTime<Utc>) -> FixedOffset {
    tz.offset_from_utc_datetime(&t.naive_utc()).fix()
}

/// The brute-force reference: walk UTC minute by minute and apply the contract's rules.
fn reference(expr: &str, both: bool, tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let e = expr_with(expr, both);
    let local = |t: DateTime<Utc>| -> NaiveDateTime { t.naive_utc() + offset_at(tz, t) };
    let mut out = Vec::new();
    // Every zone in ZONES has whole-minute offsets in the years tested.
    let mut t = from - Duration::seconds(from.timestamp().rem_euclid(60)) + Duration::minutes(1);
    while t <= until {
        let l = local(t);
        let fire = if e.is_wildcard() {
            e.matches(l)
        } else {
            let first_pass = tz.from_local_datetime(&l).earliest().map(|d| d.with_timezone(&Utc)) == Some(t);
            let prev = local(t - Duration::minutes(1));
            let mut gap_hit = false;
            let mut g = prev + Duration::minutes(1);
            while g < l {
                gap_hit |= e.matches(g);
                g += Duration::minutes(1);
            }
            (e.matches(l) && first_pass) || gap_hit
        };
        if fire {
            out.push(t);
        }
        t += Duration::minutes(1);
    }
    out
}

fn field(values: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = String> {
    let (lo, hi) = (*values.start(), *values.end());
    prop_oneof![
        Just("*".to_string()),
        (1..=hi.min(13)).prop_map(|n| format!("*/{n}")),
        (lo..=hi).prop_map(|v| v.to_string()),
        (lo..=hi, lo..=hi, 1..4u32).prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
        prop::collection::vec(lo..=hi, 1..4).prop_map(|v| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    let dom = prop_oneof![4 => field(1..=31), 1 => Just("L".to_string()), 1 => Just("1,15,L".to_string())];
    let dow = prop_oneof![
        4 => field(0..=7),
        1 => (0..=6u32).prop_map(|d| format!("{d}L")),
        1 => (0..=6u32, 1..=5u32).prop_map(|(d, k)| format!("{d}#{k}")),
    ];
    let month = prop_oneof![4 => Just("*".to_string()), 1 => field(1..=12)];
    (field(0..=59), field(0..=23), dom, month, dow).prop_map(|(m, h, dm, mo, dw)| format!("{m} {h} {dm} {mo} {dw}"))
}

/// A start instant: often near a DST transition of the zone, where the rules matter.
fn start(zone: usize) -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..2_082_758_400, any::<bool>(), -36 * 3600i64..36 * 3600).prop_map(move |(t, near, shift)| {
        let tz: Tz = ZONES[zone].parse().expect("zone");
        let base = if near {
            let table = ZoneTable::for_zone(tz);
            let seg = table.segment_at(t);
            if seg.end == i64::MAX { t } else { seg.end + shift }
        } else {
            t
        };
        DateTime::from_timestamp(base, 0).expect("in range")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn iterator_agrees_with_brute_force(
        (zone, from) in (0..ZONES.len()).prop_flat_map(|z| (Just(z), start(z))),
        expr in expression(),
        both in any::<bool>(),
    ) {
        let tz: Tz = ZONES[zone].parse().expect("zone");
        let s = CronSchedule::new(expr_with(&expr, both), tz);
        let until = from + Duration::days(3);
        let mut got = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(t) {
            prop_assert!(next > t, "{expr}: {next} not after {t}");
            if next > until { break; }
            got.push(next);
            t = next;
        }
        prop_assert_eq!(got, reference(&expr, both, tz, from, until), "{} (both days: {}) in {} from {}", expr, both, ZONES[zone], from);
    }

    #[test]
    fn strictly_increasing_from_any_instant(
        zone in 0..ZONES.len(),
        expr in expression(),
        from in -2_000_000_000i64..4_000_000_000,
        nanos in 0u32..1_000_000_000,
    ) {
        let s = schedule(&expr, ZONES[zone]);
        let mut t = DateTime::from_timestamp(from, nanos).expect("in range");
        for _ in 0..30 {
            match s.next_after(t) {
                Some(next) => { prop_assert!(next > t); t = next; }
                None => break,
            }
        }
    }
}

proptest! {
    /// The per-month bitmask the iterator jumps with is the plain day rule, day by day.
    #[test]
    fn month_bitmask_is_the_day_rule(expr in expression(), both in any::<bool>(), year in 1990i32..2110, month in 1u32..=12) {
        let e = expr_with(&expr, both);
        let mut date = chrono::NaiveDate::from_ymd_opt(year, month, 1).expect("valid");
        use chrono::Datelike;
        let mask = e.month_days(year, month, date.weekday().num_days_from_sunday(), 1);
        while date.month() == month {
            prop_assert_eq!(mask & (1 << date.day()) != 0, e.day_matches(date), "{} on {}", expr, date);
            date = date.succ_opt().expect("valid");
        }
        // Any day of the month locates the same pattern.
        let mid = chrono::NaiveDate::from_ymd_opt(year, month, 17).expect("valid");
        prop_assert_eq!(e.month_days(year, month, mid.weekday().num_days_from_sunday(), 17), mask);
    }
}
