//! The C allocator's trim threshold: for `soliton-server`, `soliton-load`, and any
//! application that embeds the engine under glibc and wants the same.
//!
//! glibc gives a thread arena's free top back to the kernel (`madvise`) once it is over
//! `M_TRIM_THRESHOLD` (128 KiB unless set). A worker on io_uring queues a fan-out
//! round's frames for every subscriber before any send completes (1,000 subscribers
//! of 1,000 x 20 B: about 22 MB), then frees them on completion: with the default
//! threshold every round handed them back and faulted them in again (16 % of the
//! server's time in page faults and `madvise`); a client sending 16 KiB messages on
//! 200 connections faulted its queue chunks in again the same way. Raising the
//! threshold keeps that memory in the arena for the next round; the arena above the
//! threshold is still trimmed. The engine never sets the thresholds itself: the process's
//! allocator is its owner's choice.
//!
//! What it does call, after connection churn ([`Config::release_memory_after`]), is
//! [`release_free_memory`]: a burst of handshakes or closes frees its buffers all at
//! once, and with a high trim threshold (or in the middle of an arena, whatever the
//! threshold) glibc keeps those pages resident for good. Under another allocator the
//! call finds glibc's arenas empty and costs nothing.
//!
//! `malloc_trim` gives back the free pages in an arena's bins, and the main arena's
//! top, but not a thread arena's top (glibc 2.36, `mtrim`): that one is trimmed only
//! from `free`, when the top is over the threshold. After a storm of closes what a
//! worker freed can all merge into its arena's top (in some runs 2.4 MB of top after
//! 15,000 closes, with 130 KB in use, by `malloc_info`). So where the threshold was
//! raised through [`set_trim_threshold`], the release also lowers it for one `free` of
//! a block over glibc's 64 KiB consolidation size on the calling thread, which makes
//! glibc trim that thread's arena's top, and then sets it back.
//!
//! [`Config::release_memory_after`]: crate::server::Config::release_memory_after

/// Whether a table of `len` entries in `capacity` is mostly spare room, worth
/// shrinking after connections left (more than twice what is in use, and more than a
/// few hundred entries): the one rule of the churn release's compaction.
pub(crate) fn mostly_room(capacity: usize, len: usize) -> bool {
    capacity > 2 * len + 256
}

/// Sets glibc's `M_TRIM_THRESHOLD` to `bytes` and its `M_MMAP_THRESHOLD` to half of
/// it (at most 32 MiB), as glibc's own dynamic rule would once it had freed a block
/// that large: setting either turns that rule off, and without the second every
/// allocation over 128 KiB would be a fresh `mmap`. False where that is not available
/// (or glibc refused it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn set_trim_threshold(bytes: usize) -> bool {
    let trim = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let mmap = (trim / 2).clamp(128 << 10, 32 << 20);
    // SAFETY: mallopt only sets one of the allocator's parameters (under its own
    // lock); it takes no pointer.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    };
    if ok {
        TRIM_THRESHOLD.store(trim, std::sync::atomic::Ordering::Relaxed);
    }
    ok
}

/// The trim threshold set through [`set_trim_threshold`] (0: never set here).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static TRIM_THRESHOLD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// A block glibc serves from the calling thread's arena (under the mmap threshold,
/// which [`set_trim_threshold`] keeps at 128 KiB or more) and whose `free` makes it
/// trim that arena's top (over its 64 KiB `FASTBIN_CONSOLIDATION_THRESHOLD`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PROBE: usize = 96 << 10;

/// Sets glibc's `M_TRIM_THRESHOLD`; false where that is not available.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn set_trim_threshold(_bytes: usize) -> bool {
    false
}

/// Hands every free page of the C allocator's arenas back to the kernel (glibc's
/// `malloc_trim(0)`, which since glibc 2.8 releases free pages in the middle of an arena
/// too), and, where the trim threshold was raised with [`set_trim_threshold`], the free
/// top of the calling thread's arena (see the module's docs). True where `malloc_trim`
/// released memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointer; it works on the allocator's own arenas
    // under their locks.
    let released = unsafe { libc::malloc_trim(0) == 1 };
    let trim = TRIM_THRESHOLD.load(std::sync::atomic::Ordering::Relaxed);
    if trim > 0 {
        // SAFETY: mallopt sets a parameter and takes no pointer; the block is this
        // call's own, written (one byte, so that it is used) only while allocated,
        // and freed once.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 0);
            let p = libc::malloc(TOP_PROBE).cast::<u8>();
            if !p.is_null() {
                std::ptr::write_volatile(p, 0);
                libc::free(p.cast());
            }
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        }
    }
    released
}

/// Hands the C allocator's free pages back to the kernel; false where that is not
/// available.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// The tests that set the process-wide thresholds and read the RSS, one at a time.
#[cfg(test)]
fn tests_serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    /// This process's RSS in kB, read without allocating (an allocation on the
    /// thread under test would sit above what it freed and keep it off the top).
    fn rss_kb_no_alloc() -> usize {
        use std::io::Read;
        let mut buf = [0u8; 128];
        let mut f = std::fs::File::open("/proc/self/statm").expect("statm");
        let n = f.read(&mut buf).expect("read statm");
        let pages = buf[..n]
            .split(|&b| b == b' ')
            .nth(1)
            .and_then(|w| std::str::from_utf8(w).ok()?.parse::<usize>().ok())
            .expect("rss pages");
        pages * crate::driver::sys::page_size() as usize / 1024
    }

    /// RSS readings (kB) around freeing 32 MB and releasing: the freed memory stayed
    /// resident (under the raised threshold), and most of it went at the release.
    fn freed_stayed_then_went(full: usize, freed: usize, released: usize) {
        eprintln!("RSS {full} kB, freed {freed} kB, released {released} kB");
        assert!(
            full.saturating_sub(freed) < 8_000,
            "freed memory left at once"
        );
        assert!(
            freed.saturating_sub(released) > 20_000,
            "released only {} kB of 32,000",
            freed.saturating_sub(released)
        );
    }

    /// A thread arena's free top, which `malloc_trim` leaves, goes back too once the
    /// threshold was raised here: every block is freed in order, so all of them merge
    /// into the top (nothing allocated meanwhile on the thread).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_thread_arenas_free_top_goes_back_when_released() {
        let _one = super::tests_serial();
        std::thread::spawn(|| {
            assert!(super::set_trim_threshold(64 << 20));
            let mut v: Vec<Vec<u8>> = Vec::with_capacity(8_000);
            for i in 0..8_000 {
                v.push(vec![i as u8 | 1; 4096]);
            }
            let full = rss_kb_no_alloc();
            for b in v.drain(..) {
                drop(b);
            }
            let freed = rss_kb_no_alloc();
            super::release_free_memory();
            let released = rss_kb_no_alloc();
            drop(v);
            super::set_trim_threshold(128 << 10);
            freed_stayed_then_went(full, freed, released);
        })
        .join()
        .unwrap();
    }

    /// glibc takes the thresholds.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_threshold() {
        let _one = super::tests_serial();
        assert!(super::set_trim_threshold(64 << 20));
        assert!(super::set_trim_threshold(256 << 10));
    }

    /// Pages freed under a high trim threshold stay resident until released.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_pages_go_back_when_released() {
        let _one = super::tests_serial();
        // a thread of its own: its own arena, away from the other tests' memory
        std::thread::spawn(|| {
            assert!(super::set_trim_threshold(64 << 20));
            // 8,000 blocks of 4 KiB, under the mmap threshold: they come from the arena
            let mut v: Vec<Vec<u8>> = (0..8_000).map(|i| vec![i as u8 | 1; 4096]).collect();
            // keep every 64th block, so the arena's top cannot be trimmed on its own
            let kept: Vec<Vec<u8>> = v.iter().step_by(64).cloned().collect();
            let full = rss_kb_no_alloc();
            v.clear();
            v.shrink_to_fit();
            let freed = rss_kb_no_alloc();
            assert!(super::release_free_memory());
            let released = rss_kb_no_alloc();
            super::set_trim_threshold(128 << 10);
            assert_eq!(kept.len(), 125);
            freed_stayed_then_went(full, freed, released);
        })
        .join()
        .unwrap();
    }
}
