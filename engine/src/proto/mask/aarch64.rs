//! NEON masking for aarch64 (NEON is part of the aarch64 baseline).
#![allow(unsafe_code)]

use core::arch::aarch64::*;

use super::scalar::mask_word;

/// # Safety
/// The CPU must support NEON (every aarch64 CPU does).
#[target_feature(enable = "neon")]
pub(super) unsafe fn mask_neon(buf: &mut [u8], key: [u8; 4]) {
    let k = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_ne_bytes(key)));
    let mut chunks = buf.chunks_exact_mut(16);
    for c in &mut chunks {
        let p = c.as_mut_ptr();
        // SAFETY: `c` is exactly 16 writable bytes; vld1q/vst1q allow any alignment.
        unsafe { vst1q_u8(p, veorq_u8(vld1q_u8(p), k)) };
    }
    mask_word(chunks.into_remainder(), key, 0);
}
