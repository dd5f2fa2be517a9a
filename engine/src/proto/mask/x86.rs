//! SSE2, AVX2 and AVX-512 masking for x86-64. Every function takes the key already
//! rotated to phase 0 (see [`super::scalar::rotate`]) and leaves a tail shorter than one
//! vector to the word loop.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use super::scalar::mask_word;

/// # Safety
/// The CPU must support SSE2 (every x86-64 CPU does).
#[target_feature(enable = "sse2")]
pub(super) unsafe fn mask_sse2(buf: &mut [u8], key: [u8; 4]) {
    let k = _mm_set1_epi32(i32::from_ne_bytes(key));
    let mut chunks = buf.chunks_exact_mut(16);
    for c in &mut chunks {
        let p = c.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `c` is exactly 16 writable bytes; loadu/storeu allow any alignment.
        unsafe { _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), k)) };
    }
    mask_word(chunks.into_remainder(), key, 0);
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn mask_avx2(buf: &mut [u8], key: [u8; 4]) {
    let k = _mm256_set1_epi32(i32::from_ne_bytes(key));
    let mut chunks = buf.chunks_exact_mut(32);
    for c in &mut chunks {
        let p = c.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `c` is exactly 32 writable bytes; loadu/storeu allow any alignment.
        unsafe { _mm256_storeu_si256(p, _mm256_xor_si256(_mm256_loadu_si256(p), k)) };
    }
    let rest = chunks.into_remainder();
    // SAFETY: AVX2 implies SSE2; the caller guarantees AVX2.
    unsafe { mask_sse2(rest, key) };
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn mask_avx512(buf: &mut [u8], key: [u8; 4]) {
    let k = _mm512_set1_epi32(i32::from_ne_bytes(key));
    let mut chunks = buf.chunks_exact_mut(64);
    for c in &mut chunks {
        let p = c.as_mut_ptr().cast::<__m512i>();
        // SAFETY: `c` is exactly 64 writable bytes; loadu/storeu allow any alignment.
        unsafe { _mm512_storeu_si512(p, _mm512_xor_si512(_mm512_loadu_si512(p), k)) };
    }
    let rest = chunks.into_remainder();
    // SAFETY: AVX-512F implies AVX2 on every CPU that has it; checked again by the
    // dispatcher, which only picks this function when AVX2 is also detected.
    unsafe { mask_avx2(rest, key) };
}
