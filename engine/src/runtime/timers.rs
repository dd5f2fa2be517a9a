//! Deadlines of one worker, in milliseconds since its epoch: a heap of (deadline, slot,
//! sequence), 16 bytes an entry, at most one live entry per connection. A slot keeps
//! the one deadline that matters to it now (`timer`) and when its heap entry is due
//! (`sched`). A later deadline does not push an entry: when the earlier entry comes up,
//! it is pushed again for the deadline then in force. An earlier deadline pushes one
//! (the later entry is then skipped as stale). An entry whose slot is gone or reused is
//! skipped too.
//!
//! Slots keep these times in 32 bits (their low bits, [`ms32`]); they are read back
//! relative to now ([`full`]), which is exact for any deadline within 24 days of now:
//! every timeout is capped at [`MAX_TIMEOUT`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::slot::ms32;

/// The longest timeout a slot's 32-bit times can hold (see the module docs).
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 24 * 3600);

/// A slot's 32-bit time, read back as the full time nearest to `now`.
pub(crate) fn full(now: u64, t32: u32) -> u64 {
    (now as i64 + t32.wrapping_sub(now as u32) as i32 as i64).max(0) as u64
}

#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    epoch: Instant,
    now: Instant,
    now_ms: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        let now = Instant::now();
        Timers {
            heap: BinaryHeap::new(),
            // a second back, so that every time is at least 1000 ms (0 means "none")
            epoch: now - Duration::from_secs(1),
            now,
            now_ms: 1000,
        }
    }

    /// Sets the clock for this loop iteration.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The deadline `after` from now (at most [`MAX_TIMEOUT`]), in ms.
    pub(crate) fn after(&self, after: Duration) -> u64 {
        self.now_ms + after.min(MAX_TIMEOUT).as_millis() as u64
    }

    /// The instant of a deadline kept in ms.
    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Sets a slot's deadline to `at` (its `timer` and `sched`; `idx` and `seq` name
    /// it in the heap).
    pub(crate) fn arm(&mut self, timer: &mut u32, sched: &mut u32, at: u64, idx: usize, seq: u64) {
        *timer = ms32(at);
        if *sched == 0 || at < full(self.now_ms, *sched) {
            *sched = ms32(at);
            self.heap.push(Reverse((at, idx as u32, seq as u32)));
        }
    }

    /// Drops the entries `keep` refuses (`keep(at, idx, seq)`: stale ones, of slots
    /// gone or moved on) and, when the heap is then mostly empty room, its spare
    /// capacity: after a storm of closes the heap holds an entry per closed connection
    /// until each comes due (the idle timeout later) and its room for them for good.
    /// O(entries); for the worker's release after connection churn.
    pub(crate) fn compact(&mut self, mut keep: impl FnMut(u64, usize, u32) -> bool) {
        self.heap
            .retain(|&Reverse((at, idx, seq))| keep(at, idx as usize, seq));
        if crate::alloc::mostly_room(self.heap.capacity(), self.heap.len()) {
            self.heap.shrink_to_fit();
        }
    }

    /// Entries in the heap, and its room.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.heap.len(), self.heap.capacity())
    }

    /// The earliest deadline (possibly of a stale entry: waking for it is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|r| self.instant_of(r.0 .0))
    }

    /// The next entry due by now, removed; or `None`, with the next deadline left in
    /// `next`.
    pub(crate) fn pop_due(&mut self, next: &mut Option<Instant>) -> Option<(u64, usize, u32)> {
        let &Reverse((at, idx, seq)) = self.heap.peek()?;
        if at > self.now_ms {
            *next = Some(self.instant_of(at));
            return None;
        }
        self.heap.pop();
        Some((at, idx as usize, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_two_bit_times_read_back_near_now() {
        for now in [4_000_000u64, (1 << 32) - 5, (1 << 32) + 7, 5 << 32] {
            for d in [-3_600_000i64, -1, 0, 1, 120_000, 24 * 24 * 3600 * 1000] {
                let t = (now as i64 + d) as u64;
                assert_eq!(full(now, t as u32), t, "now {now} d {d}");
            }
        }
    }

    /// One heap entry per slot: a later deadline waits for the earlier entry; an
    /// earlier one pushes its own.
    #[test]
    fn later_deadlines_reuse_the_entry_earlier_ones_push() {
        let mut t = Timers::new();
        let (mut timer, mut sched) = (0, 0);
        t.arm(&mut timer, &mut sched, 10_000, 3, 9);
        t.arm(&mut timer, &mut sched, 120_000, 3, 9);
        assert_eq!(t.heap.len(), 1);
        assert_eq!((timer, sched), (120_000, 10_000));
        t.arm(&mut timer, &mut sched, 5_000, 3, 9);
        assert_eq!(t.heap.len(), 2);
        assert_eq!((timer, sched), (5_000, 5_000));
        assert_eq!(size_of::<Reverse<(u64, u32, u32)>>(), 16);
    }

    /// Compaction drops what `keep` refuses, keeps the order of what stays, and gives
    /// back the room of a heap left mostly empty.
    #[test]
    fn compact_drops_stale_entries_and_spare_room() {
        let mut t = Timers::new();
        for idx in 0..15_000usize {
            let (mut timer, mut sched) = (0, 0);
            let at = 200_000 - idx as u64;
            t.arm(&mut timer, &mut sched, at, idx, idx as u64);
        }
        // every 100th connection is still open
        t.compact(|_, idx, seq| idx % 100 == 0 && seq == idx as u32);
        let (len, cap) = t.size();
        assert_eq!(len, 150);
        assert!(cap < 2 * 150 + 256, "room {cap}");
        t.set_now(t.instant_of(300_000));
        let mut next = None;
        let mut last = 0;
        let mut n = 0;
        while let Some((at, idx, _)) = t.pop_due(&mut next) {
            assert!(at >= last && idx % 100 == 0);
            last = at;
            n += 1;
        }
        assert_eq!(n, 150, "in deadline order");
    }
}
