//! The timers: which jobs fire next.
//!
//! Jobs due at the same instant share one entry: an ordered map from instant to the list of
//! (job, slot) due then. Large schedules are dominated by such bursts (10 000 jobs `every =
//! "1s"` are all due on the same second), and a heap of one entry per job paid a pop with its
//! cache misses per fire: at 100 000 jobs that was a third of the loop's time. Here a burst is
//! one map operation and a walk along a vector, and arming the next fire appends to the next
//! instant's list. Within an instant, jobs come out in job order (the config's), as they did.
//! Emptied lists are kept for reuse, so a steady schedule allocates nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// One armed timer: a job's next slot, and when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When the fire runs: its slot, plus the job's jitter.
    pub at: DateTime<Utc>,
    pub job: u32,
    /// The slot the schedule asked for.
    pub slot: DateTime<Utc>,
}

type Entries = Vec<(u32, DateTime<Utc>)>;

#[derive(Debug, Default)]
pub struct Timers {
    /// Instant -> what is due then, in the order armed (sorted when the instant comes).
    buckets: BTreeMap<DateTime<Utc>, Entries>,
    /// The instant being popped: its entries, sorted, and how many were popped.
    current: Option<(DateTime<Utc>, Entries, usize)>,
    len: usize,
    spare: Vec<Entries>,
}

impl Timers {
    pub fn push(&mut self, at: DateTime<Utc>, job: u32) {
        self.push_slot(at, at, job);
    }

    /// Queues `slot` of `job` to run at `at` (later than the slot when the job has jitter).
    /// While a burst is being popped, `at` must be later than the burst's instant (the loop
    /// only arms fires after `now`).
    #[inline]
    pub fn push_slot(&mut self, slot: DateTime<Utc>, at: DateTime<Utc>, job: u32) {
        let entries = match self.buckets.get_mut(&at) {
            Some(entries) => entries,
            None => self.buckets.entry(at).or_insert_with(|| self.spare.pop().unwrap_or_default()),
        };
        entries.push((job, slot));
        self.len += 1;
    }

    /// An entry of the earliest instant (the first armed for it, for a summary line).
    pub fn peek(&self) -> Option<Timer> {
        if let Some((at, entries, popped)) = &self.current
            && let Some(&(job, slot)) = entries.get(*popped)
        {
            return Some(Timer { at: *at, job, slot });
        }
        let (at, entries) = self.buckets.first_key_value()?;
        let &(job, slot) = entries.first()?;
        Some(Timer { at: *at, job, slot })
    }

    /// The earliest entry's instant.
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        if let Some((at, entries, popped)) = &self.current
            && *popped < entries.len()
        {
            return Some(*at);
        }
        self.buckets.first_key_value().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    #[inline]
    pub fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Timer> {
        loop {
            if let Some((at, entries, popped)) = &mut self.current {
                if let Some(&(job, slot)) = entries.get(*popped) {
                    *popped += 1;
                    self.len -= 1;
                    return Some(Timer { at: *at, job, slot });
                }
                let (_, mut done, _) = self.current.take().expect("just matched");
                done.clear();
                self.spare.push(done);
            }
            match self.buckets.first_key_value() {
                Some((at, _)) if *at <= now => {
                    let (at, mut entries) = self.buckets.pop_first().expect("just seen");
                    // Armed in job order by the previous burst: sorting is one pass.
                    entries.sort_unstable();
                    self.current = Some((at, entries, 0));
                }
                _ => return None,
            }
        }
    }

    /// Drops every entry of `job`; returns its instant, if it had one.
    pub fn remove(&mut self, job: u32) -> Option<DateTime<Utc>> {
        let mut found = None;
        if let Some((at, entries, popped)) = &mut self.current {
            let before = entries.len();
            let mut i = *popped;
            while i < entries.len() {
                if entries[i].0 == job {
                    entries.remove(i);
                } else {
                    i += 1;
                }
            }
            if entries.len() < before {
                found = Some(*at);
                self.len -= before - entries.len();
            }
        }
        let mut emptied = Vec::new();
        for (at, entries) in self.buckets.iter_mut() {
            let before = entries.len();
            entries.retain(|e| e.0 != job);
            if entries.len() < before {
                found = found.or(Some(*at));
                self.len -= before - entries.len();
                if entries.is_empty() {
                    emptied.push(*at);
                }
            }
        }
        for at in emptied {
            if let Some(entries) = self.buckets.remove(&at) {
                self.spare.push(entries);
            }
        }
        found
    }

    /// Takes every entry out (a reload rebuilds the timers).
    pub fn drain(&mut self) -> Vec<Timer> {
        let mut out = Vec::with_capacity(self.len);
        if let Some((at, entries, popped)) = self.current.take() {
            out.extend(entries[popped..].iter().map(|&(job, slot)| Timer { at, job, slot }));
        }
        for (at, entries) in std::mem::take(&mut self.buckets) {
            out.extend(entries.into_iter().map(|(job, slot)| Timer { at, job, slot }));
        }
        self.len = 0;
        out
    }

    /// Renumbers the jobs after a reload, in place: `map` gives a job's new number, or `None`
    /// to take its timer out; those taken out are returned (old numbers). Instants and slots
    /// stay as they are, so the jobs a reload did not change keep their pending fires without
    /// the timers being rebuilt.
    pub fn remap(&mut self, mut map: impl FnMut(u32) -> Option<u32>) -> Vec<Timer> {
        let mut taken = Vec::new();
        let mut renumber = |at: DateTime<Utc>, entries: &mut Entries, from: usize| {
            let mut kept = from;
            for i in from..entries.len() {
                let (job, slot) = entries[i];
                match map(job) {
                    Some(new) => {
                        entries[kept] = (new, slot);
                        kept += 1;
                    }
                    None => taken.push(Timer { at, job, slot }),
                }
            }
            entries.truncate(kept);
        };
        if let Some((at, entries, popped)) = &mut self.current {
            renumber(*at, entries, *popped);
            // Renumbered entries must come out in job order, as armed ones do.
            entries[*popped..].sort_unstable();
        }
        let mut emptied = Vec::new();
        for (at, entries) in self.buckets.iter_mut() {
            renumber(*at, entries, 0);
            if entries.is_empty() {
                emptied.push(*at);
            }
        }
        for at in emptied {
            if let Some(entries) = self.buckets.remove(&at) {
                self.spare.push(entries);
            }
        }
        self.len -= taken.len();
        taken
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("valid")
    }

    #[test]
    fn pops_due_entries_in_time_order() {
        let mut timers = Timers::default();
        timers.push(t(30), 0);
        timers.push(t(10), 1);
        timers.push(t(20), 2);
        assert_eq!(timers.next_at(), Some(t(10)));
        assert_eq!(timers.pop_due(t(5)), None);
        assert_eq!(timers.pop_due(t(25)).map(|e| e.job), Some(1));
        assert_eq!(timers.pop_due(t(25)).map(|e| e.job), Some(2));
        assert_eq!(timers.pop_due(t(25)), None);
        assert_eq!(timers.remove(0), Some(t(30)));
        assert!(timers.is_empty());
    }

    /// What the heap did, entry for entry: the same (at, job, slot) order for any pushes,
    /// pops, removals and re-arming in between.
    #[test]
    fn remap_renumbers_in_place_and_hands_back_what_it_takes_out() {
        let mut timers = Timers::default();
        for job in 0..6 {
            timers.push_slot(t(10 + (job % 2) as i64), t(10 + (job % 2) as i64), job);
        }
        // A burst half popped: its rest is renumbered too.
        assert_eq!(timers.pop_due(t(10)).map(|e| e.job), Some(0));
        // Jobs 1 and 4 leave; the others are numbered backwards.
        let mut taken = timers.remap(|job| (job != 1 && job != 4).then_some(10 - job));
        taken.sort();
        assert_eq!(taken, [Timer { at: t(10), job: 4, slot: t(10) }, Timer { at: t(11), job: 1, slot: t(11) }]);
        assert_eq!(timers.len(), 3);
        let rest: Vec<(u32, i64)> =
            std::iter::from_fn(|| timers.pop_due(t(11))).map(|e| (e.job, e.at.timestamp())).collect();
        // Within an instant in job order, as armed ones come out.
        assert_eq!(rest, [(8, 10), (5, 11), (7, 11)]);
        assert!(timers.is_empty());
    }

    #[test]
    fn agrees_with_a_heap() {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let (mut timers, mut heap) = (Timers::default(), BinaryHeap::new());
            let mut now = 0;
            for _ in 0..300 {
                match rng.u8(0..10) {
                    0..=5 => {
                        let (job, at) = (rng.u32(0..50), now + 1 + rng.i64(0..6));
                        let slot = at - rng.i64(0..2);
                        timers.push_slot(t(slot), t(at), job);
                        heap.push(Reverse(Timer { at: t(at), job, slot: t(slot) }));
                    }
                    6..=8 => {
                        now += rng.i64(0..3);
                        // Pop a few (not always all) of what is due, then maybe re-arm one.
                        for _ in 0..rng.usize(0..8) {
                            let want = match heap.peek() {
                                Some(Reverse(e)) if e.at <= t(now) => heap.pop().map(|Reverse(e)| e),
                                _ => None,
                            };
                            assert_eq!(timers.pop_due(t(now)), want);
                            if let Some(e) = want
                                && rng.bool()
                            {
                                let at = now + 1 + rng.i64(0..4);
                                timers.push_slot(t(at), t(at), e.job);
                                heap.push(Reverse(Timer { at: t(at), job: e.job, slot: t(at) }));
                            }
                        }
                    }
                    _ => {
                        let job = rng.u32(0..50);
                        let want = heap.iter().filter(|Reverse(e)| e.job == job).map(|Reverse(e)| e.at).min();
                        heap.retain(|Reverse(e)| e.job != job);
                        assert_eq!(timers.remove(job).is_some(), want.is_some());
                    }
                }
                assert_eq!(timers.len(), heap.len());
                assert_eq!(timers.next_at(), heap.peek().map(|Reverse(e)| e.at));
            }
            let mut rest: Vec<Timer> = heap.into_iter().map(|Reverse(e)| e).collect();
            rest.sort();
            let mut drained = timers.drain();
            drained.sort();
            assert_eq!(drained, rest);
        }
    }
}
