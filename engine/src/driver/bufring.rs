//! An io_uring provided buffer ring (`IORING_REGISTER_PBUF_RING`) and the buffers it
//! hands out: the receive side of the io_uring driver.
//!
//! Multishot receives pick a free buffer from the ring; the completion names it
//! ([`io_uring::cqueue::buffer_select`]). From then on the buffer is *lent* to the
//! caller ([`BufRing::lend`], [`BufRing::get`]) until [`BufRing::give_back`] returns it
//! to the ring, which [`BufRing::publish`] makes visible to the kernel (once per batch
//! of completions). Lending is tracked, so a buffer given back twice, or read while the
//! kernel owns it, panics instead of corrupting data.
//!
//! The kernel takes buffers from the ring's head and they come back at its tail, so
//! every buffer in the ring is written once per round of the ring: with all 128 × 32 KiB
//! in it, 200 connections echoing 16 KiB each swept 2 MiB of receive memory, as much as
//! the core's L2, and the kernel's copy into it ran 20 % slower than epoll's into one
//! buffer (`perf`). So only as many buffers are in the ring as the receives need
//! ([`Population`]): fewer while no receive goes without, all of them again at once
//! when one does (`ENOBUFS`).
//!
//! The buffers are one anonymous mapping, so a page is resident only once the kernel
//! has written a receive into it (an idle worker's ring costs no memory), and a buffer
//! held out of the ring gives its pages back (`MADV_DONTNEED`): after a burst, the
//! ring's resident memory shrinks with its population.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use super::sys;

/// A provided buffer ring of `entries` buffers of `size` bytes each, registered with
/// one io_uring instance under one buffer group id.
#[derive(Debug)]
pub(crate) struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    /// `entries * size` bytes mapped with `mmap`, an inaccessible page on either side
    /// (null when the mapping failed).
    bufs: *mut u8,
    bufs_len: usize,
    /// The system's page size (what `release` rounds to).
    page: usize,
    entries: u16,
    size: usize,
    /// Local tail (published with `publish`).
    tail: u16,
    /// Buffers handed out by the kernel and not yet given back to it.
    lent: Vec<bool>,
    /// How many buffers are in the ring, and those kept out of it.
    pop: Population,
    /// Buffers kept out of the ring (most recently given back last: the warmest).
    held: Vec<u16>,
    /// Buffers receives have taken from the ring so far.
    swept: u64,
}

/// How many of a ring's buffers are in it: `target` at most, starting with all of
/// them. A buffer given back while `target` are in the ring is held out; when the ring
/// never fell below half of `target` over `WINDOW` receives, `target` halves (down to
/// `min`); when a receive found the ring empty (`ENOBUFS`), it is all of them again,
/// and no halving follows for `CALM` windows. Pure bookkeeping, so that it can be
/// tested without a kernel.
#[derive(Debug)]
pub(crate) struct Population {
    entries: u16,
    min: u16,
    target: u16,
    /// Buffers in the ring (given to the kernel, not yet handed out).
    in_ring: u16,
    /// The fewest in the ring at any receive of this window.
    low: u16,
    /// Receives in this window.
    seen: u32,
    /// Windows left before the target may halve again.
    calm: u32,
}

impl Population {
    /// Receives per window.
    const WINDOW: u32 = 1024;
    /// Windows without halving after the ring ran dry.
    const CALM: u32 = 64;

    fn new(entries: u16) -> Population {
        Population {
            entries,
            min: (entries / 4).max(16).min(entries),
            target: entries,
            in_ring: 0,
            low: entries,
            seen: 0,
            calm: 0,
        }
    }

    /// Receives took `n` buffers from the ring (a pass's completions, counted before
    /// any of their buffers comes back, so that `low` sees the pass's whole dip).
    fn took(&mut self, n: u16) {
        self.in_ring = self.in_ring.saturating_sub(n);
        self.low = self.low.min(self.in_ring);
        self.seen += u32::from(n);
        if self.seen >= Self::WINDOW {
            if self.calm > 0 {
                self.calm -= 1;
            } else if self.low > self.target / 2 && self.target / 2 >= self.min {
                self.target /= 2;
            }
            self.seen = 0;
            self.low = self.in_ring;
        }
    }

    /// A buffer comes back: true if it goes into the ring, false if it is held out.
    fn back(&mut self) -> bool {
        if self.in_ring < self.target {
            self.in_ring += 1;
            true
        } else {
            false
        }
    }

    /// A receive found the ring empty: all buffers are wanted in it again.
    fn ran_dry(&mut self) {
        self.target = self.entries;
        self.calm = Self::CALM;
    }
}

/// When to give back the pages of a ring's empty buffers after a burst of receives:
/// a receive lands in the buffer at the ring's head, so a burst of at least as many
/// receives as the ring has buffers (a handshake storm, a round of idle pings' pongs)
/// touches every buffer's first page, which stays resident once the burst is over.
/// A second after such a sweep, and again each second while receives still take a
/// quarter of the ring or more per second, the watch checks; once they take fewer,
/// it says release. Steady traffic keeps the ring's pages (they are in use) and costs
/// one check a second. Pure bookkeeping, so that it can be tested without a kernel.
#[derive(Debug, Default)]
pub(crate) struct SweepWatch {
    /// Buffers taken at the last look.
    mark: u64,
    /// When to look again (a sweep was seen).
    check: Option<Instant>,
}

impl SweepWatch {
    /// How long after a sweep (and between checks while receives go on) it looks.
    pub(crate) const DELAY: Duration = Duration::from_secs(1);

    /// Looks at the ring (`taken` buffers so far, `entries` in all) at `now`: true
    /// when its empty buffers' pages should go back now.
    pub(crate) fn tend(&mut self, now: Instant, taken: u64, entries: u16) -> bool {
        let since = taken.wrapping_sub(self.mark);
        match self.check {
            None if since >= u64::from(entries) => {
                self.mark = taken;
                self.check = Some(now + Self::DELAY);
            }
            Some(at) if now >= at => {
                self.mark = taken;
                if since < u64::from(entries / 4).max(1) {
                    self.check = None;
                    return true;
                }
                self.check = Some(now + Self::DELAY);
            }
            _ => {}
        }
        false
    }

    /// The pages went back for another reason (a release after connection churn):
    /// nothing is owed until the next sweep.
    pub(crate) fn released(&mut self, taken: u64) {
        self.mark = taken;
        self.check = None;
    }

    /// When it wants to look next.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.check
    }
}

impl BufRing {
    /// Allocates `entries` (a power of two) buffers of `size` bytes, registers them with
    /// `uring` as buffer group `bgid`, and gives them all to the kernel.
    ///
    /// # Safety
    /// The kernel writes into these buffers for as long as the group is registered:
    /// the `BufRing` must not be dropped before `uring` is dropped or the group is
    /// unregistered (`Submitter::unregister_buf_ring(bgid)`). Owners keep it in a field
    /// declared after their `IoUring`, or in a `ManuallyDrop` they drop after
    /// unregistering.
    pub(crate) unsafe fn new(
        uring: &IoUring,
        entries: u16,
        size: usize,
        bgid: u16,
    ) -> io::Result<Self> {
        if !entries.is_power_of_two() || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let ring_layout =
            Layout::from_size_align(entries as usize * size_of::<BufRingEntry>(), 4096)
                .map_err(io::Error::other)?;
        let bufs_len = (entries as usize)
            .checked_mul(size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the layout has a non-zero size (entries >= 1).
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // Not the allocator: it would zero the whole block by hand (an alignment above
        // 16 bytes rules out `calloc`), making every page resident at start. A fresh
        // anonymous mapping reads as zeros and takes pages as they are written. It has
        // an inaccessible page on either side: a write past the area faults instead of
        // landing in a neighbour's memory, and the area stays a mapping of its own (the
        // kernel would merge it with an adjacent one of the same kind), so that
        // `/proc/PID/smaps` shows what of it is resident.
        let page = sys::page_size() as usize;
        let (bufs, map_err) = map_guarded(bufs_len, page);
        // from here on `Drop` frees what was allocated
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_len,
            page,
            entries,
            size,
            tail: 0,
            lent: vec![true; entries as usize],
            pop: Population::new(entries),
            held: Vec::with_capacity(entries as usize),
            swept: 0,
        };
        if let Some(e) = map_err {
            return Err(e);
        }
        if ring.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        // SAFETY: the ring memory is page aligned and sized for `entries`; it lives
        // until `Drop`, which the caller runs only after the registration is gone (the
        // contract of this function); if registration fails, the kernel keeps no
        // reference.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ring as u64, entries, bgid, 0)?
        };
        for bid in 0..entries {
            br.give_back(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Buffers in the ring.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Bytes per buffer.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Records that a completion handed buffer `bid` out of the ring.
    pub(crate) fn lend(&mut self, bid: u16) {
        if let Some(l) = self.lent.get_mut(bid as usize) {
            *l = true;
        }
    }

    /// Counts `n` buffers handed out of the ring by the completions about to be
    /// dispatched (before any of them is given back).
    pub(crate) fn taken(&mut self, n: usize) {
        self.pop.took(n.min(u16::MAX as usize) as u16);
        self.swept += n as u64;
    }

    /// Buffers receives have taken from the ring so far, and the ring's size (for a
    /// [`SweepWatch`]).
    pub(crate) fn swept(&self) -> (u64, u16) {
        (self.swept, self.entries)
    }

    /// Gives lent buffer `bid` back: into the ring (at the local tail, visible to the
    /// kernel after [`publish`](Self::publish)) or, while the ring holds as many as the
    /// receives need, out of it.
    ///
    /// # Panics
    /// If `bid` is not lent (given back twice, or never handed out).
    pub(crate) fn give_back(&mut self, bid: u16) {
        assert!(
            self.lent.get(bid as usize) == Some(&true),
            "buffer {bid} given back twice"
        );
        self.lent[bid as usize] = false;
        if self.pop.back() {
            self.push(bid);
        } else {
            self.release(bid);
            self.held.push(bid);
        }
    }

    /// Gives the whole pages of buffer `bid` (held out of the ring: neither the kernel
    /// nor a caller uses it) back to the kernel; they read as zeros when next written.
    /// Rare: buffers are held only after the population halves, at most one round of
    /// the ring per halving.
    fn release(&mut self, bid: u16) {
        // SAFETY: buffer `bid` is not in the ring and not lent, so no one reads or
        // writes it until it is pushed again, and then it reads as zeros, which is all
        // a fresh buffer promises.
        unsafe { self.advise_away(bid as usize * self.size, self.size) };
    }

    /// Advises away (`MADV_DONTNEED`) the whole pages of `[start, start + len)` of the
    /// buffer area (rounded inwards); the bytes advised (0 on failure, which leaves
    /// the pages as they were).
    ///
    /// # Safety
    /// No one may read or write the range during the call (neither a caller nor the
    /// kernel), and whoever uses it next must take zeros for its contents.
    unsafe fn advise_away(&self, start: usize, len: usize) -> usize {
        let first = start.next_multiple_of(self.page);
        let end = (start + len) / self.page * self.page;
        if end <= first || start + len > self.bufs_len {
            return 0;
        }
        // SAFETY: `[first, end)` lies inside `[start, start + len)`, checked above to
        // be inside the mapping; the rest is this function's contract.
        let r = unsafe {
            libc::madvise(
                self.bufs.add(first).cast(),
                end - first,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            end - first
        } else {
            0
        }
    }

    /// Gives the pages of every buffer that is not lent back to the kernel, those in
    /// the ring included: what a burst of receives left resident in them holds no data
    /// anyone will read (the completion that next hands a buffer out carries freshly
    /// written bytes), and they read as zeros when the kernel next writes one. For the
    /// worker's release after connection churn: a handshake storm lands each request
    /// in a fresh buffer, touching every buffer's first page (512 KiB with 128 buffers),
    /// which idle connections do not need. Returns the bytes advised away.
    ///
    /// # Safety
    /// The kernel must not be writing into this ring's buffers during the call: true
    /// when the ring was set up with `IORING_SETUP_DEFER_TASKRUN` and the caller is
    /// the thread that submits to it, outside `io_uring_enter` (with deferred task
    /// work, a multishot receive copies its data only inside that thread's
    /// `io_uring_enter`). Had a write raced with the advice, its bytes could read as
    /// zeros.
    pub(crate) unsafe fn release_unused(&mut self) -> usize {
        let mut released = 0;
        let mut bid = 0usize;
        while bid < self.lent.len() {
            let run = self.lent[bid..].iter().take_while(|&&l| !l).count();
            if run > 0 {
                // SAFETY: buffers `bid..bid + run` are not lent, so no caller holds a
                // slice of them; by this function's contract the kernel does not
                // write into them during the call; the next receive into one is
                // written whole before it is handed out.
                released += unsafe { self.advise_away(bid * self.size, run * self.size) };
            }
            bid += run.max(1);
        }
        released
    }

    /// A receive found the ring empty (`ENOBUFS`): every held buffer goes back in,
    /// the warmest first (visible after [`publish`](Self::publish)).
    pub(crate) fn ran_dry(&mut self) {
        self.pop.ran_dry();
        while let Some(&bid) = self.held.last() {
            if !self.pop.back() {
                break;
            }
            self.held.pop();
            self.push(bid);
        }
    }

    /// Buffers in the ring now, and held out of it.
    #[cfg(test)]
    pub(crate) fn population(&self) -> (u16, usize) {
        (self.pop.in_ring, self.held.len())
    }

    /// Queues buffer `bid` (not lent, not in the ring) at the local tail.
    fn push(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        let slot = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `slot < entries`, inside the ring allocation; the kernel only reads
        // entries between its head and the published tail, and this one is past it (at
        // most `entries` buffers are ever in the ring, so it does not overwrite one the
        // kernel has yet to consume).
        let e = unsafe { &mut *self.ring.add(slot) };
        // SAFETY: `bid < entries` (checked by the callers), so the buffer lies inside
        // `bufs`.
        e.set_addr(unsafe { self.bufs.add(bid as usize * self.size) } as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: `ring` is the first entry of the registered ring; the tail field
        // overlays its reserved field (2-byte aligned in a page-aligned block) and is
        // written with release ordering, as the kernel reads it with acquire.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release);
        }
    }

    /// The first `len` bytes of lent buffer `bid` (what the kernel wrote).
    ///
    /// # Panics
    /// If `bid` is not lent or `len` exceeds the buffer size.
    pub(crate) fn get(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(
            self.lent.get(bid as usize) == Some(&true) && len <= self.size,
            "buffer {bid} is not lent (or {len} > {})",
            self.size
        );
        // SAFETY: the range is inside `bufs`; the kernel handed this buffer out with a
        // completion and does not touch it until it is given back, which needs `&mut
        // self` and so ends this borrow first.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.add(bid as usize * self.size), len) }
    }
}

/// Maps `len` bytes of zeros, readable and writable, between two inaccessible pages:
/// the area's start, or null and the system's reason.
fn map_guarded(len: usize, page: usize) -> (*mut u8, Option<io::Error>) {
    let Some(total) = len.checked_add(2 * page) else {
        return (
            std::ptr::null_mut(),
            Some(io::Error::from_raw_os_error(libc::ENOMEM)),
        );
    };
    // SAFETY: a new private anonymous mapping of `total > 0` bytes; no address hint,
    // no file.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        // the system's reason, read before anything else can change errno
        return (std::ptr::null_mut(), Some(io::Error::last_os_error()));
    }
    // SAFETY: `[page, page + len)` lies inside the new mapping of `len + 2 * page`
    // bytes, which nothing else knows of yet.
    let area = unsafe { mapped.cast::<u8>().add(page) };
    // SAFETY: `area` and `len` lie inside the mapping (above).
    let r = unsafe { libc::mprotect(area.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
    if r != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: the mapping made above, unmapped once, nothing uses it.
        unsafe { libc::munmap(mapped, total) };
        return (std::ptr::null_mut(), Some(e));
    }
    (area, None)
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated (the ring) and mapped (the buffers, with their guard pages:
        // `map_guarded`) in `new` with these sizes, or null when that failed; freed
        // once; by `new`'s contract the kernel no longer uses them.
        unsafe {
            if !self.ring.is_null() {
                dealloc(self.ring.cast(), self.ring_layout);
            }
            if !self.bufs.is_null() {
                libc::munmap(
                    self.bufs.sub(self.page).cast(),
                    self.bufs_len + 2 * self.page,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registration, lending and giving back, on kernels that allow it.
    #[test]
    fn lend_get_give_back() {
        let Ok(uring) = IoUring::new(8) else {
            eprintln!("SKIPPED: io_uring unavailable here");
            return;
        };
        // SAFETY: `br` is dropped before `uring` (declared after it, dropped first).
        let Ok(mut br) = (unsafe { BufRing::new(&uring, 4, 64, 7) }) else {
            eprintln!("SKIPPED: provided buffer rings unavailable here");
            return;
        };
        assert_eq!((br.entries(), br.size()), (4, 64));
        br.lend(2);
        br.get(2, 64).fill(0xab);
        assert!(br.get(2, 3).iter().all(|&b| b == 0xab));
        br.give_back(2);
        br.publish();
        let twice = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| br.give_back(2)));
        assert!(twice.is_err(), "a buffer given back twice is refused");
        let unlent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            br.get(1, 1);
        }));
        assert!(unlent.is_err(), "a buffer the kernel owns cannot be read");
        drop(br);
    }

    /// A buffer area the system cannot map (32,768 x 4 GiB, past the address space)
    /// fails with the system's reason, and nothing is registered.
    #[test]
    fn an_area_that_cannot_be_mapped_reports_the_system_error() {
        let Ok(uring) = IoUring::new(8) else {
            eprintln!("SKIPPED: io_uring unavailable here");
            return;
        };
        // SAFETY: nothing is registered when `new` fails; `uring` outlives the call.
        let r = unsafe { BufRing::new(&uring, 32_768, u32::MAX as usize, 7) };
        let Err(e) = r else {
            panic!("a 140 TB mapping succeeded")
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOMEM), "{e}");
    }

    /// Drives a population as the driver does: each pass the kernel takes `k` buffers,
    /// then they all come back; returns the target after `passes` passes.
    fn passes(p: &mut Population, k: u16, passes: u32) {
        for _ in 0..passes {
            p.took(k.min(p.in_ring));
            for _ in 0..k {
                let _ = p.back();
            }
        }
    }

    /// The target halves while half of it is never used, down to what the passes
    /// need (or the minimum), and never below that.
    #[test]
    fn population_settles_at_what_the_receives_need() {
        let mut p = Population::new(128);
        for _ in 0..128 {
            assert!(p.back());
        }
        assert!(!p.back(), "a 129th buffer is held out");
        // 20 receives a pass (the kernel's task-work batch): 128 -> 64 -> 32, where
        // the fewest in the ring (12) is under half of the target
        passes(&mut p, 20, 2_000);
        assert_eq!(p.target, 32);
        assert!(p.in_ring <= 32);
        // one receive a pass: down to the minimum, a quarter of the buffers
        passes(&mut p, 1, 20_000);
        assert_eq!(p.target, p.min);
        assert_eq!(p.min, 32);
        // small rings keep at least 16, or all of theirs
        assert_eq!(Population::new(8).min, 8);
        assert_eq!(Population::new(32).min, 16);
        assert_eq!(Population::new(1024).min, 256);
    }

    /// Running dry restores every buffer, and the target stays there for `CALM`
    /// windows however little is used.
    #[test]
    fn population_running_dry_wants_every_buffer_back_for_a_while() {
        let mut p = Population::new(128);
        for _ in 0..128 {
            p.back();
        }
        passes(&mut p, 1, 20_000);
        assert_eq!(p.target, 32);
        p.ran_dry();
        assert_eq!(p.target, 128);
        let mut back = 0;
        while p.back() {
            back += 1;
        }
        assert_eq!(p.in_ring, 128, "{back} buffers went back in");
        passes(&mut p, 1, Population::WINDOW * (Population::CALM - 1));
        assert_eq!(p.target, 128, "no halving while calm");
        passes(&mut p, 1, 3 * Population::WINDOW);
        assert!(p.target < 128, "then halving again");
    }

    /// With a kernel: buffers held out of the ring come back in, the warmest first,
    /// when the ring runs dry, and the ring's tail counts every buffer put in.
    #[test]
    fn held_buffers_go_back_in_when_the_ring_runs_dry() {
        let Ok(uring) = IoUring::new(8) else {
            eprintln!("SKIPPED: io_uring unavailable here");
            return;
        };
        // SAFETY: `br` is dropped before `uring` (declared after it, dropped first).
        let Ok(mut br) = (unsafe { BufRing::new(&uring, 64, 64, 9) }) else {
            eprintln!("SKIPPED: provided buffer rings unavailable here");
            return;
        };
        assert_eq!(br.population(), (64, 0));
        let start = br.tail;
        // one buffer at a time out and back, as the kernel would hand them out in order
        for i in 0..(Population::WINDOW * 4) {
            let bid = (i % 64) as u16;
            if br.lent[bid as usize] {
                continue;
            }
            br.taken(1);
            br.lend(bid);
            br.give_back(bid);
        }
        let (in_ring, held) = br.population();
        assert!(in_ring <= 32 && held >= 32, "{in_ring} in, {held} held");
        assert_eq!(in_ring as usize + held, 64);
        let last_held = *br.held.last().unwrap();
        let before = br.tail;
        br.ran_dry();
        assert_eq!(br.population(), (64, 0));
        assert_eq!(br.tail.wrapping_sub(before) as usize, held);
        // the first entry written by ran_dry is the warmest held buffer
        let slot = (before & 63) as usize;
        // SAFETY: `slot < entries`, inside the ring allocation (test only reads it).
        let e = unsafe { &*br.ring.add(slot) };
        assert_eq!(e.bid(), last_held);
        assert!(br.tail.wrapping_sub(start) as usize >= 64 + held);
        br.publish();
    }

    /// Pages of `len` bytes at `off` in the ring's buffers that are resident.
    fn resident(br: &BufRing, off: usize, len: usize) -> usize {
        let mut vec = vec![0u8; len.div_ceil(br.page)];
        // SAFETY: `[off, off + len)` lies inside the mapping and `off` is page aligned
        // (the callers pass whole buffers whose size is a multiple of the page); `vec`
        // has a byte per page.
        let r = unsafe { libc::mincore(br.bufs.add(off).cast(), len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// With a kernel: a new ring's buffers take no memory until written; a buffer held
    /// out of the ring gives its pages back, and reads as zeros once it is back.
    #[test]
    fn buffers_take_memory_when_written_and_give_it_back_when_held() {
        let Ok(uring) = IoUring::new(8) else {
            eprintln!("SKIPPED: io_uring unavailable here");
            return;
        };
        let size = 2 * sys::page_size() as usize;
        // SAFETY: `br` is dropped before `uring` (declared after it, dropped first).
        let Ok(mut br) = (unsafe { BufRing::new(&uring, 64, size, 11) }) else {
            eprintln!("SKIPPED: provided buffer rings unavailable here");
            return;
        };
        assert_eq!(
            resident(&br, 0, 64 * size),
            0,
            "nothing resident before a write"
        );
        for i in 0..(Population::WINDOW * 4) {
            let bid = (i % 64) as u16;
            // the kernel hands out only buffers in the ring
            if br.lent[bid as usize] || br.held.contains(&bid) {
                continue;
            }
            br.taken(1);
            br.lend(bid);
            br.get(bid, size).fill(0xab);
            br.give_back(bid);
        }
        let (in_ring, held) = br.population();
        assert!(in_ring <= 32 && held >= 32, "{in_ring} in, {held} held");
        for bid in 0..64u16 {
            let pages = resident(&br, bid as usize * size, size);
            if br.held.contains(&bid) {
                assert_eq!(pages, 0, "held buffer {bid} gave its pages back");
            } else {
                assert_eq!(pages, 2, "buffer {bid} in the ring keeps what was written");
            }
        }
        let bid = br.held[0];
        br.ran_dry();
        assert_eq!(br.population(), (64, 0));
        br.lend(bid);
        assert!(
            br.get(bid, size).iter().all(|&b| b == 0),
            "a released buffer reads as zeros"
        );
        br.give_back(bid);
    }

    /// With a kernel writing real receives: buffers a burst touched keep their pages
    /// in the ring; `release_unused` gives them back, and receives after it land
    /// whole in the released buffers.
    #[test]
    fn unused_buffers_give_their_pages_back_and_take_receives_after() {
        use io_uring::{cqueue, opcode, types};
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let Ok(mut uring) = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(64)
        else {
            eprintln!("SKIPPED: io_uring with deferred task work unavailable here");
            return;
        };
        let size = 2 * sys::page_size() as usize;
        // SAFETY: `uring` is dropped before `br` (explicitly, at the end of the test).
        let Ok(mut br) = (unsafe { BufRing::new(&uring, 16, size, 12) }) else {
            eprintln!("SKIPPED: provided buffer rings unavailable here");
            return;
        };
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let recv = opcode::RecvMulti::new(types::Fd(rx.as_raw_fd()), 12)
            .build()
            .user_data(1);
        // SAFETY: the descriptor outlives the ring's use of it (the ring is dropped
        // before it at the end of the test, ending the receive).
        unsafe { uring.submission().push(&recv).unwrap() };
        // one message per round, each received before the next is written: each
        // lands in a buffer of its own
        let mut round = |uring: &mut IoUring, br: &mut BufRing, msg: &[u8]| {
            tx.write_all(msg).unwrap();
            uring.submit_and_wait(1).unwrap();
            let cqes: Vec<cqueue::Entry> = uring.completion().collect();
            assert_eq!(cqes.len(), 1, "one receive per message");
            let (res, flags) = (cqes[0].result(), cqes[0].flags());
            assert!(cqueue::more(flags), "the multishot receive stays armed");
            let bid = cqueue::buffer_select(flags).expect("a provided buffer");
            br.taken(1);
            br.lend(bid);
            assert_eq!(br.get(bid, res as usize), msg);
            br.give_back(bid);
            br.publish();
        };
        let all = 16 * size;
        for i in 0..16u8 {
            round(&mut uring, &mut br, &[i; 100]);
        }
        let before = resident(&br, 0, all);
        assert!(before >= 16, "every buffer's first page written ({before})");
        // SAFETY: deferred task work, this thread, outside `io_uring_enter`.
        let advised = unsafe { br.release_unused() };
        assert_eq!(advised, all, "no buffer is lent: the whole area");
        assert_eq!(
            resident(&br, 0, all),
            0,
            "nothing resident after the release"
        );
        for i in 0..32u8 {
            let msg = vec![0x80 | i; size];
            round(&mut uring, &mut br, &msg);
        }
        assert!(
            resident(&br, 0, all) > 0,
            "released buffers take receives again"
        );
        drop(uring);
        drop(br);
    }

    /// A sweep of the ring, then quiet: release a second later; steady receives: a
    /// check a second, never a release; a churn release resets it.
    #[test]
    fn sweep_watch_releases_after_a_burst_and_not_under_steady_receives() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let mut w = SweepWatch::default();
        // fewer receives than the ring has buffers: nothing to watch
        assert!(!w.tend(s(0), 127, 128));
        assert_eq!(w.next(), None);
        // a sweep: look again a second later
        assert!(!w.tend(s(10), 128, 128));
        assert_eq!(w.next(), Some(s(1010)));
        assert!(!w.tend(s(500), 400, 128), "not before the second is up");
        // still busy at the check (272 taken within it): look again
        assert!(!w.tend(s(1010), 400, 128));
        assert_eq!(w.next(), Some(s(2010)));
        // quiet (31 < 128 / 4): release, and nothing pending after it
        assert!(w.tend(s(2010), 431, 128));
        assert_eq!(w.next(), None);
        assert!(!w.tend(s(5000), 431, 128));
        // steady traffic: a check every second, never a release
        let mut taken = 431;
        for sec in 6..20 {
            taken += 1000;
            assert!(!w.tend(s(sec * 1000 + 20), taken, 128), "busy second {sec}");
            assert!(w.next().is_some());
        }
        // a release for churn: nothing owed until the next sweep
        w.released(taken);
        assert_eq!(w.next(), None);
        assert!(!w.tend(s(30_000), taken + 100, 128));
        assert_eq!(w.next(), None);
        // a counter that wraps is a sweep like any other
        let mut w = SweepWatch::default();
        w.released(u64::MAX - 10);
        assert!(!w.tend(s(0), 200, 128));
        assert_eq!(w.next(), Some(s(1000)));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Ok(uring) = IoUring::new(8) else {
            return;
        };
        for (entries, size) in [(3, 64), (4, 0), (0, 64)] {
            // SAFETY: a refused ring registers nothing.
            assert!(unsafe { BufRing::new(&uring, entries, size, 1) }.is_err());
        }
    }
}
