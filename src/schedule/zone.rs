//! Offset tables: where a time zone's UTC offset changes.
//!
//! chrono-tz answers "what is the offset at this instant" but not "where are the transitions",
//! and the cron rules for daylight-saving changes are all about transitions: a fixed-time job
//! whose local time falls in a skipped hour fires at the end of the gap, and one whose local
//! time repeats fires only in the first pass. So for each zone we build, once, a sorted table
//! of the instants where the offset changes, by sampling chrono-tz and refining each change to
//! the second. The table splits the time line into *segments* of constant offset, in which
//! local time is a plain shift of UTC; the cron iterator works segment by segment and needs no
//! time-zone look-up on its hot path.
//!
//! Sampling every 6 hours finds every transition that is not cancelled by another one less
//! than 6 hours later; no zone in the tz database has such a pair in the covered years.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

/// First instant sampled: 1900-01-01T00:00:00Z.
const TABLE_START: i64 = -2_208_988_800;
/// Last instant sampled: 2200-01-01T00:00:00Z. Past it the last offset holds.
const TABLE_END: i64 = 7_258_118_400;
const SAMPLE_STEP: i64 = 6 * 3600;

/// The offset segments of one zone.
#[derive(Debug)]
pub struct ZoneTable {
    tz: Tz,
    /// `starts[i]` is the UTC second at which segment `i + 1` begins.
    starts: Vec<i64>,
    /// `offsets[i]` is the UTC offset, in seconds, of segment `i`. One longer than `starts`.
    offsets: Vec<i32>,
}

/// One stretch of constant offset: `[start, end)` in UTC seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub index: usize,
    pub start: i64,
    pub end: i64,
    pub offset: i64,
    /// The offset of the segment before, if any.
    pub prev_offset: Option<i64>,
}

impl ZoneTable {
    /// The shared table for `tz`, built on first use.
    pub fn for_zone(tz: Tz) -> Arc<ZoneTable> {
        static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<ZoneTable>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut map = match cache.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(tz.name()).or_insert_with(|| Arc::new(ZoneTable::build(tz))).clone()
    }

    fn build(tz: Tz) -> ZoneTable {
        let mut starts = Vec::new();
        let mut offsets = vec![offset_at(tz, TABLE_START)];
        let mut prev_t = TABLE_START;
        let mut prev_off = offsets[0];
        let mut t = TABLE_START;
        while t < TABLE_END {
            t = (t + SAMPLE_STEP).min(TABLE_END);
            let off = offset_at(tz, t);
            // Several transitions may hide in one step: find them one at a time.
            while off != prev_off {
                let (mut lo, mut hi) = (prev_t, t); // offset(lo) == prev_off, the change is in (lo, hi]
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset_at(tz, mid) == prev_off {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                prev_off = offset_at(tz, hi);
                prev_t = hi;
                starts.push(hi);
                offsets.push(prev_off);
            }
            prev_t = t;
        }
        ZoneTable { tz, starts, offsets }
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The segment that contains the UTC second `t`.
    #[inline]
    pub fn segment_at(&self, t: i64) -> Segment {
        let index = self.starts.partition_point(|&s| s <= t);
        self.segment(index)
    }

    /// Segment number `index`, which must exist (`index <= transitions`).
    #[inline]
    pub fn segment(&self, index: usize) -> Segment {
        Segment {
            index,
            start: if index == 0 { i64::MIN } else { self.starts[index - 1] },
            end: self.starts.get(index).copied().unwrap_or(i64::MAX),
            offset: i64::from(self.offsets[index]),
            prev_offset: index.checked_sub(1).map(|i| i64::from(self.offsets[i])),
        }
    }

    /// The segment after `seg`, if there is one.
    #[inline]
    pub fn next_segment(&self, seg: &Segment) -> Option<Segment> {
        (seg.index < self.starts.len()).then(|| self.segment(seg.index + 1))
    }

    /// The UTC offset in seconds at UTC second `t`.
    #[inline]
    pub fn offset_at(&self, t: i64) -> i64 {
        self.segment_at(t).offset
    }
}

fn offset_at(tz: Tz, t: i64) -> i32 {
    let utc = DateTime::from_timestamp(t, 0).unwrap_or_default().naive_utc();
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_york_2026_transitions_are_exact() {
        let table = ZoneTable::for_zone(chrono_tz::America::New_York);
        // 2026-03-08T07:00:00Z: 02:00 EST becomes 03:00 EDT.
        let spring = 1_772_953_200;
        assert_eq!(table.offset_at(spring - 1), -5 * 3600);
        assert_eq!(table.offset_at(spring), -4 * 3600);
        let seg = table.segment_at(spring);
        assert_eq!(seg.start, spring);
        assert_eq!(seg.prev_offset, Some(-5 * 3600));
        // 2026-11-01T06:00:00Z: 02:00 EDT becomes 01:00 EST.
        assert_eq!(seg.end, 1_793_512_800);
    }

    #[test]
    fn agrees_with_chrono_tz_everywhere_sampled() {
        for tz in [
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::America::Santiago,
            chrono_tz::Europe::Berlin,
            chrono_tz::Asia::Kathmandu,
            chrono_tz::Pacific::Apia,
        ] {
            let table = ZoneTable::for_zone(tz);
            let mut t = 946_684_800; // 2000-01-01
            while t < 2_208_988_800 {
                // 2040-01-01
                assert_eq!(table.offset_at(t), i64::from(offset_at(tz, t)), "{tz} at {t}");
                t += 3600 * 7 + 13;
            }
        }
    }

    #[test]
    fn utc_is_one_segment() {
        let table = ZoneTable::for_zone(chrono_tz::UTC);
        let seg = table.segment_at(0);
        assert_eq!((seg.start, seg.end, seg.offset), (i64::MIN, i64::MAX, 0));
        assert!(table.next_segment(&seg).is_none());
    }
}
