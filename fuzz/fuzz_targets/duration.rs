//! Durations and interval schedules: any `every` and `offset` text; for a valid pair, 50 slots
//! from an instant, strictly increasing, `every` apart, on the grid the offset shifts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use beatd::config::table::parse_duration;
use beatd::schedule::Interval;
use beatd_fuzz::instant;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    every: &'a str,
    offset: &'a str,
    from: i64,
}

fuzz_target!(|input: Input<'_>| {
    let (Ok(every), Ok(offset)) = (parse_duration(input.every), parse_duration(input.offset)) else { return };
    let Some(interval) = Interval::new(every, offset) else { return };
    let step = i64::try_from(every.as_millis()).expect("Interval::new took it");
    let shift = i64::try_from(offset.as_millis()).expect("Interval::new took it");
    let mut t = instant(input.from);
    let first = interval.latest_at_or_before(t);
    if let Some(first) = first {
        assert!(first <= t);
    }
    let mut previous: Option<chrono::DateTime<chrono::Utc>> = None;
    for _ in 0..50 {
        let Some(next) = interval.next_after(t) else { return };
        assert!(next > t, "every {every:?} offset {offset:?}: {next} not after {t}");
        let ms = next.timestamp_millis();
        assert_eq!((i128::from(ms) - i128::from(shift)).rem_euclid(i128::from(step)), 0, "{next} is off the grid");
        if let Some(p) = previous {
            assert_eq!(ms - p.timestamp_millis(), step, "slots {p} and {next} are not `every` apart");
        }
        assert_eq!(interval.latest_at_or_before(next), Some(next));
        previous = Some(next);
        t = next;
    }
});
