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
//! threshold is still trimmed. The engine never calls this itself: the process's
//! allocator is its owner's choice.

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
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
    }
}

/// Sets glibc's `M_TRIM_THRESHOLD`; false where that is not available.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn set_trim_threshold(_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    /// glibc takes the thresholds.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_threshold() {
        assert!(super::set_trim_threshold(64 << 20));
        assert!(super::set_trim_threshold(256 << 10));
    }
}
