//! An io_uring provided buffer ring (`IORING_REGISTER_PBUF_RING`) and the buffers it
//! hands out: the receive side of the io_uring driver.
//!
//! Multishot receives pick a free buffer from the ring; the completion names it
//! ([`io_uring::cqueue::buffer_select`]). From then on the buffer is *lent* to the
//! caller ([`BufRing::lend`], [`BufRing::get`]) until [`BufRing::give_back`] returns it
//! to the ring, which [`BufRing::publish`] makes visible to the kernel (once per batch
//! of completions). Lending is tracked, so a buffer given back twice, or read while the
//! kernel owns it, panics instead of corrupting data.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// A provided buffer ring of `entries` buffers of `size` bytes each, registered with
/// one io_uring instance under one buffer group id.
#[derive(Debug)]
pub(crate) struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    size: usize,
    /// Local tail (published with `publish`).
    tail: u16,
    /// Buffers handed out by the kernel and not yet given back to it.
    lent: Vec<bool>,
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
        let bufs_layout =
            Layout::from_size_align(entries as usize * size, 4096).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size >= 1).
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        // from here on `Drop` frees what was allocated
        let mut br = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            size,
            tail: 0,
            lent: vec![true; entries as usize],
        };
        if ring.is_null() || bufs.is_null() {
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

    /// Queues lent buffer `bid` at the local tail (visible to the kernel after
    /// [`publish`](Self::publish)).
    ///
    /// # Panics
    /// If `bid` is not lent (given back twice, or never handed out).
    pub(crate) fn give_back(&mut self, bid: u16) {
        assert!(
            self.lent.get(bid as usize) == Some(&true),
            "buffer {bid} given back twice"
        );
        self.lent[bid as usize] = false;
        let slot = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `slot < entries`, inside the ring allocation; the kernel only reads
        // entries between its head and the published tail, and this one is past it (at
        // most `entries` buffers are ever out, so it does not overwrite one the kernel
        // has yet to consume).
        let e = unsafe { &mut *self.ring.add(slot) };
        // SAFETY: `bid < entries` (checked above), so the buffer lies inside `bufs`.
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

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts (or null, when allocation
        // failed), freed once; by `new`'s contract the kernel no longer uses them.
        unsafe {
            if !self.ring.is_null() {
                dealloc(self.ring.cast(), self.ring_layout);
            }
            if !self.bufs.is_null() {
                dealloc(self.bufs, self.bufs_layout);
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
