//! Deadlines of one worker, in milliseconds since its epoch: a heap of (deadline, slot),
//! 8 bytes an entry, at most one live entry per connection. A slot keeps the one
//! deadline that matters to it now (`timer`) and when its heap entry is due (`sched`).
//! A later deadline does not push an entry: when the earlier entry comes up, it is
//! pushed again for the deadline then in force. An earlier deadline pushes one (the
//! later entry is then skipped as stale). An entry is its slot's live one only while
//! the slot's `sched` names its time: an entry whose slot is gone, moved on or taken by
//! another connection is skipped. (An entry left by a closed connection can meet a new
//! connection in its slot due at the same millisecond; it then stands for that
//! connection's own entry, due at the same time, which is skipped in turn because the
//! first one cleared or moved `sched`.)
//!
//! Slots keep these times in 32 bits (their low bits, [`ms32`]); they are read back
//! relative to now ([`full`]), which is exact for any deadline within 24 days of now:
//! every timeout is capped at [`MAX_TIMEOUT`]. The heap keeps each deadline in 32 bits
//! too, as an offset from a base it moves forward every 24 days or so (a shift of every
//! entry by the same amount, which keeps their order).

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

/// How far `now` may run past the heap's base before the base moves: with every
/// deadline at most [`MAX_TIMEOUT`] ahead of now, offsets stay under
/// `REBASE_AFTER + MAX_TIMEOUT` < 2^32 ms.
const REBASE_AFTER: u64 = 1 << 31;

const _: () = assert!(REBASE_AFTER + (MAX_TIMEOUT.as_secs() * 1000) < 1 << 32);

#[derive(Debug)]
pub(crate) struct Timers {
    /// (deadline - `base`, slot index)
    heap: BinaryHeap<Reverse<(u32, u32)>>,
    /// The ms every entry's offset counts from.
    base: u64,
    epoch: Instant,
    now: Instant,
    now_ms: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        let now = Instant::now();
        Timers {
            heap: BinaryHeap::new(),
            base: 0,
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
        if self.now_ms - self.base > REBASE_AFTER {
            self.rebase();
        }
    }

    /// Moves the base up to now (or to the earliest entry, if one is older): every
    /// entry's offset falls by the same amount, so the heap stays ordered.
    #[cold]
    fn rebase(&mut self) {
        let first = self
            .heap
            .peek()
            .map_or(u64::MAX, |r| self.base + r.0 .0 as u64);
        let delta = (self.now_ms.min(first) - self.base) as u32;
        let mut v = std::mem::take(&mut self.heap).into_vec();
        for Reverse((off, _)) in &mut v {
            *off -= delta;
        }
        self.heap = BinaryHeap::from(v);
        self.base += delta as u64;
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

    /// Sets a slot's deadline to `at` (its `timer` and `sched`; `idx` names it in the
    /// heap).
    pub(crate) fn arm(&mut self, timer: &mut u32, sched: &mut u32, at: u64, idx: usize) {
        // (never before the base, which is at or before now: such a deadline is due)
        let at = at.clamp(self.base, self.now_ms + MAX_TIMEOUT.as_millis() as u64);
        *timer = ms32(at);
        if *sched == 0 || at < full(self.now_ms, *sched) {
            *sched = ms32(at);
            let off = (at - self.base) as u32;
            self.heap.push(Reverse((off, idx as u32)));
        }
    }

    /// Drops the entries `keep` refuses (`keep(at, idx)`: stale ones, of slots gone or
    /// moved on) and, when the heap is then mostly empty room, its spare
    /// capacity: after a storm of closes the heap holds an entry per closed connection
    /// until each comes due (the idle timeout later) and its room for them for good.
    /// O(entries); for the worker's release after connection churn.
    pub(crate) fn compact(&mut self, mut keep: impl FnMut(u64, usize) -> bool) {
        let base = self.base;
        self.heap
            .retain(|&Reverse((off, idx))| keep(base + off as u64, idx as usize));
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
        self.heap
            .peek()
            .map(|r| self.instant_of(self.base + r.0 .0 as u64))
    }

    /// The next entry due by now, removed; or `None`, with the next deadline left in
    /// `next`.
    pub(crate) fn pop_due(&mut self, next: &mut Option<Instant>) -> Option<(u64, usize)> {
        let &Reverse((off, idx)) = self.heap.peek()?;
        let at = self.base + off as u64;
        if at > self.now_ms {
            *next = Some(self.instant_of(at));
            return None;
        }
        self.heap.pop();
        Some((at, idx as usize))
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
        t.arm(&mut timer, &mut sched, 10_000, 3);
        t.arm(&mut timer, &mut sched, 120_000, 3);
        assert_eq!(t.heap.len(), 1);
        assert_eq!((timer, sched), (120_000, 10_000));
        t.arm(&mut timer, &mut sched, 5_000, 3);
        assert_eq!(t.heap.len(), 2);
        assert_eq!((timer, sched), (5_000, 5_000));
        assert_eq!(size_of::<Reverse<(u32, u32)>>(), 8);
    }

    /// Compaction drops what `keep` refuses, keeps the order of what stays, and gives
    /// back the room of a heap left mostly empty.
    #[test]
    fn compact_drops_stale_entries_and_spare_room() {
        let mut t = Timers::new();
        for idx in 0..15_000usize {
            let (mut timer, mut sched) = (0, 0);
            let at = 200_000 - idx as u64;
            t.arm(&mut timer, &mut sched, at, idx);
        }
        // every 100th connection is still open
        t.compact(|at, idx| idx % 100 == 0 && at == 200_000 - idx as u64);
        let (len, cap) = t.size();
        assert_eq!(len, 150);
        assert!(cap < 2 * 150 + 256, "room {cap}");
        t.set_now(t.instant_of(300_000));
        let mut next = None;
        let mut last = 0;
        let mut n = 0;
        while let Some((at, idx)) = t.pop_due(&mut next) {
            assert!(at >= last && idx % 100 == 0);
            last = at;
            n += 1;
        }
        assert_eq!(n, 150, "in deadline order");
    }

    /// Past 2^32 ms (49 days) of a worker's life the heap's 32-bit offsets move to a
    /// new base: deadlines keep their times and their order across every move.
    #[test]
    fn deadlines_survive_the_base_moving_for_months() {
        let mut t = Timers::new();
        let day = 24 * 3600 * 1000u64;
        let mut slots = vec![(0u32, 0u32); 64];
        let mut fired = 0;
        // a connection every hour or so, each with a deadline 1 to 23 days ahead;
        // 200 days in all, so the base moves 8 times or more
        let mut now = t.now_ms();
        let mut want: Vec<(u64, usize)> = Vec::new();
        for step in 0..4_800u64 {
            now += 3_600_000 + step % 7;
            t.set_now(t.instant_of(now));
            let mut next = None;
            while let Some((at, idx)) = t.pop_due(&mut next) {
                let (timer, sched) = &mut slots[idx];
                if *sched != ms32(at) {
                    continue;
                }
                *sched = 0;
                assert_eq!(full(now, *timer), at, "fired at its own time");
                assert!(at <= now && now - at <= 3_600_010, "late by {}", now - at);
                let pos = want.iter().position(|&w| w == (at, idx)).expect("armed");
                want.swap_remove(pos);
                *timer = 0;
                fired += 1;
            }
            let idx = (step % 64) as usize;
            let (timer, sched) = &mut slots[idx];
            if *timer == 0 {
                let at = now + day * (1 + step % 23) + step;
                t.arm(timer, sched, at, idx);
                want.push((at, idx));
            }
        }
        assert!(t.base > 8 * (1 << 31), "the base moved on: {}", t.base);
        assert!(fired > 1_000, "{fired} deadlines fired");
        // what is left fires in order once time runs past it
        t.set_now(t.instant_of(now + 30 * day));
        let mut next = None;
        let mut last = 0;
        while let Some((at, idx)) = t.pop_due(&mut next) {
            if slots[idx].1 == ms32(at) {
                assert!(at >= last);
                last = at;
                want.retain(|&w| w != (at, idx));
            }
        }
        assert!(want.is_empty(), "never fired: {want:?}");
    }
}
