//! Masking and unmasking payloads in place (RFC 6455 §5.3).
//!
//! [`apply_mask`] picks the widest implementation the CPU supports, detected once and
//! cached: AVX-512F, AVX2 or SSE2 on x86-64, NEON on aarch64, and a word-at-a-time
//! loop elsewhere, under Miri, or with `--cfg soliton_no_simd`. [`MaskImpl`] lets tests
//! and benchmarks call each implementation directly.
//!
//! `phase` is the number of payload bytes before `buf` that were already masked with
//! the same key, so a payload split across reads resumes at the right key byte.

#[cfg(all(target_arch = "aarch64", not(miri), not(soliton_no_simd)))]
mod aarch64;
mod scalar;
#[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
mod x86;

use core::sync::atomic::{AtomicU8, Ordering};

pub use scalar::{mask_bytewise, mask_word, rotate};

/// One masking implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskImpl {
    /// One byte at a time: the oracle.
    Bytewise,
    /// Eight bytes at a time, portable.
    Word,
    /// x86-64 SSE2, 16 bytes at a time.
    Sse2,
    /// x86-64 AVX2, 32 bytes at a time.
    Avx2,
    /// x86-64 AVX-512F, 64 bytes at a time.
    Avx512,
    /// aarch64 NEON, 16 bytes at a time.
    Neon,
}

impl MaskImpl {
    const ALL: [MaskImpl; 6] = [
        MaskImpl::Bytewise,
        MaskImpl::Word,
        MaskImpl::Sse2,
        MaskImpl::Avx2,
        MaskImpl::Avx512,
        MaskImpl::Neon,
    ];

    /// Whether this build and this CPU can run the implementation.
    pub fn is_available(self) -> bool {
        match self {
            MaskImpl::Bytewise | MaskImpl::Word => true,
            #[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
            MaskImpl::Sse2 => std::is_x86_feature_detected!("sse2"),
            #[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
            MaskImpl::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
            MaskImpl::Avx512 => {
                std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx2")
            }
            #[cfg(all(target_arch = "aarch64", not(miri), not(soliton_no_simd)))]
            MaskImpl::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every implementation this build and CPU can run, narrowest first.
    pub fn available() -> Vec<MaskImpl> {
        MaskImpl::ALL
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The implementation [`apply_mask`] uses on this machine.
    pub fn detected() -> MaskImpl {
        match SELECTED.load(Ordering::Relaxed) {
            0 => {
                let best = MaskImpl::ALL
                    .into_iter()
                    .rev()
                    .find(|i| i.is_available() && *i != MaskImpl::Bytewise)
                    .unwrap_or(MaskImpl::Word);
                SELECTED.store(best as u8 + 1, Ordering::Relaxed);
                best
            }
            n => MaskImpl::ALL[(n - 1) as usize],
        }
    }

    /// Masks with this implementation; returns `false` (and leaves `buf` alone) when it
    /// is not available here.
    pub fn apply(self, buf: &mut [u8], key: [u8; 4], phase: usize) -> bool {
        if !self.is_available() {
            return false;
        }
        run(self, buf, key, phase);
        true
    }
}

/// 0 = not detected yet, else `MaskImpl as u8 + 1`.
static SELECTED: AtomicU8 = AtomicU8::new(0);

/// Below this, the word loop beats the vector path (whose tail steps down through
/// narrower vectors); measured with callgrind on 20-byte payloads.
const SMALL: usize = 32;

/// XORs `buf` with `key`, starting at key byte `phase % 4`, using the best
/// implementation for this CPU.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) {
    if buf.len() < SMALL {
        mask_word(buf, key, phase);
        return;
    }
    run(MaskImpl::detected(), buf, key, phase);
}

/// The vector width of `imp` in bytes (1 for the portable loops).
const fn width(imp: MaskImpl) -> usize {
    match imp {
        MaskImpl::Bytewise | MaskImpl::Word => 1,
        MaskImpl::Sse2 | MaskImpl::Neon => 16,
        MaskImpl::Avx2 => 32,
        MaskImpl::Avx512 => 64,
    }
}

/// Runs `imp`; the caller has checked that it is available.
///
/// Payloads usually start a few bytes past an aligned address (behind a 2-14 byte
/// frame header), and a vector store that straddles cache lines costs twice. So the
/// bytes up to the next vector boundary go through the word loop first, and the
/// vector loop continues from the aligned address with the key rotated to match.
fn run(imp: MaskImpl, buf: &mut [u8], key: [u8; 4], phase: usize) {
    let w = width(imp);
    if w > 1 && buf.len() >= 4 * w {
        let lead = buf.as_ptr().align_offset(w);
        if lead != 0 && lead < buf.len() {
            let (head, body) = buf.split_at_mut(lead);
            mask_word(head, key, phase);
            run_at(imp, body, key, phase + lead);
            return;
        }
    }
    run_at(imp, buf, key, phase);
}

/// Runs `imp` over `buf` from wherever it starts.
#[allow(unsafe_code)]
fn run_at(imp: MaskImpl, buf: &mut [u8], key: [u8; 4], phase: usize) {
    match imp {
        MaskImpl::Bytewise => mask_bytewise(buf, key, phase),
        #[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
        // SAFETY: `imp` is available (checked by `apply` or chosen by `detected`),
        // so the CPU has SSE2.
        MaskImpl::Sse2 => unsafe { x86::mask_sse2(buf, rotate(key, phase)) },
        #[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
        // SAFETY: as above, the CPU has AVX2.
        MaskImpl::Avx2 => unsafe { x86::mask_avx2(buf, rotate(key, phase)) },
        #[cfg(all(target_arch = "x86_64", not(miri), not(soliton_no_simd)))]
        // SAFETY: as above, the CPU has AVX-512F and AVX2.
        MaskImpl::Avx512 => unsafe { x86::mask_avx512(buf, rotate(key, phase)) },
        #[cfg(all(target_arch = "aarch64", not(miri), not(soliton_no_simd)))]
        // SAFETY: as above, the CPU has NEON.
        MaskImpl::Neon => unsafe { aarch64::mask_neon(buf, rotate(key, phase)) },
        _ => mask_word(buf, key, phase),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proto::test_rng::Rng;

    #[test]
    fn every_path_matches_bytewise_oracle() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let imps = MaskImpl::available();
        let iterations = if cfg!(miri) { 20 } else { 3000 };
        let mut backing = vec![0u8; 4096 + 64];
        for _ in 0..iterations {
            let len = (rng.next() % if cfg!(miri) { 200 } else { 4097 }) as usize;
            let off = (rng.next() % 64) as usize;
            let phase = (rng.next() % 4) as usize;
            let key = (rng.next() as u32).to_ne_bytes();
            for b in backing.iter_mut() {
                *b = rng.next() as u8;
            }
            let mut expect = backing.clone();
            mask_bytewise(&mut expect[off..off + len], key, phase);
            for &imp in &imps {
                let mut got = backing.clone();
                assert!(imp.apply(&mut got[off..off + len], key, phase));
                assert_eq!(got, expect, "{imp:?} len {len} off {off} phase {phase}");
            }
            let mut got = backing.clone();
            apply_mask(&mut got[off..off + len], key, phase);
            assert_eq!(got, expect, "dispatch len {len} off {off} phase {phase}");
        }
    }

    #[test]
    fn small_lengths_and_alignments_exhaustive() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for imp in MaskImpl::available() {
            for len in 0..=130 {
                for off in 0..4 {
                    for phase in 0..4 {
                        let mut a: Vec<u8> = (0..140u8).collect();
                        let mut b = a.clone();
                        mask_bytewise(&mut a[off..off + len], key, phase);
                        imp.apply(&mut b[off..off + len], key, phase);
                        assert_eq!(a, b, "{imp:?} {len} {off} {phase}");
                    }
                }
            }
        }
    }

    #[test]
    fn split_payload_resumes_key_phase() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut parts = data.clone();
        let (a, rest) = parts.split_at_mut(7);
        let (b, c) = rest.split_at_mut(333);
        apply_mask(a, key, 0);
        apply_mask(b, key, 7);
        apply_mask(c, key, 340);
        assert_eq!(parts, whole);
    }

    #[test]
    fn unavailable_impl_is_refused() {
        for imp in MaskImpl::ALL {
            let mut buf = [7u8; 8];
            let ran = imp.apply(&mut buf, [1, 1, 1, 1], 0);
            assert_eq!(ran, imp.is_available());
            assert_eq!(buf == [7u8; 8], !ran);
        }
        assert!(MaskImpl::detected().is_available());
    }
}
