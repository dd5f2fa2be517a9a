//! Classifying a block: SSE2 on x86-64 (16 bytes per instruction), a word-at-a-time
//! loop elsewhere. Both give the same masks.
//!
//! The only `unsafe` of the handshake parser lives here: calls into SSE2 functions,
//! which every x86-64 CPU runs. The portable versions are the oracle in the tests below.

use super::BLOCK;

/// Where the bytes that delimit a head's lines and fields are in a block: bit `i` of
/// each mask stands for byte `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Classes {
    /// LF.
    pub(super) newlines: u64,
    /// `:`.
    pub(super) colons: u64,
    /// CR or NUL.
    pub(super) bad: u64,
}

/// Calls the SSE2 version of a function where the build targets SSE2 (every x86-64
/// build does), else the portable one.
macro_rules! simd_or_portable {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "sse2",
            not(miri),
            not(soliton_no_simd)
        ))]
        #[allow(unsafe_code)]
        // SAFETY: the build targets SSE2 (`target_feature = "sse2"` above), so the CPU
        // running it has SSE2; the SSE2 functions only read their arguments.
        return unsafe { sse2::$f($($arg),*) };
        #[allow(unreachable_code)]
        portable::$f($($arg),*)
    }};
}

/// The bytes of `block` equal to `byte`.
#[inline(always)]
pub(super) fn equal(block: &[u8; BLOCK], byte: u8) -> u64 {
    simd_or_portable!(equal(block, byte))
}

/// The LFs, colons, CRs and NULs of `block`.
#[inline(always)]
pub(super) fn classes(block: &[u8; BLOCK]) -> Classes {
    simd_or_portable!(classes(block))
}

/// The bytes of `chunk` that are ASCII letters, digits or `-`: the bytes of almost
/// every header name.
#[inline(always)]
pub(super) fn name_bytes(chunk: &[u8; 16]) -> u32 {
    simd_or_portable!(name_bytes(chunk))
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "sse2",
    not(miri),
    not(soliton_no_simd)
))]
mod sse2 {
    use core::arch::x86_64::*;

    use super::{Classes, BLOCK};

    /// 16 bytes as a vector, without pointers: two words LLVM merges into one load.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn load(b: &[u8; 16]) -> __m128i {
        let lo = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = i64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        _mm_set_epi64x(hi, lo)
    }

    /// One bit per byte of `v` that equals the byte in every lane of `c`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn eq(v: __m128i, c: __m128i) -> __m128i {
        _mm_cmpeq_epi8(v, c)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn bits(v: __m128i, at: usize) -> u64 {
        (_mm_movemask_epi8(v) as u32 as u64) << at
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn equal(block: &[u8; BLOCK], byte: u8) -> u64 {
        let byte = _mm_set1_epi8(byte as i8);
        let mut marks = 0;
        for (i, part) in block.as_chunks::<16>().0.iter().enumerate() {
            marks |= bits(eq(load(part), byte), 16 * i);
        }
        marks
    }

    /// Lanes of `v` (as unsigned bytes) that are at most `max`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn at_most(v: __m128i, max: u8) -> __m128i {
        _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(max as i8)), v)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn name_bytes(chunk: &[u8; 16]) -> u32 {
        let v = load(chunk);
        // setting bit 5 makes a letter small and takes nothing else to `a..=z`
        let small = _mm_or_si128(v, _mm_set1_epi8(0x20));
        let letter = at_most(_mm_sub_epi8(small, _mm_set1_epi8(b'a' as i8)), 25);
        let digit = at_most(_mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8)), 9);
        let dash = eq(v, _mm_set1_epi8(b'-' as i8));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(letter, digit), dash)) as u32
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    pub(super) fn classes(block: &[u8; BLOCK]) -> Classes {
        let lf = _mm_set1_epi8(b'\n' as i8);
        let colon = _mm_set1_epi8(b':' as i8);
        let cr = _mm_set1_epi8(b'\r' as i8);
        let nul = _mm_setzero_si128();
        let mut c = Classes {
            newlines: 0,
            colons: 0,
            bad: 0,
        };
        for (i, part) in block.as_chunks::<16>().0.iter().enumerate() {
            let v = load(part);
            c.newlines |= bits(eq(v, lf), 16 * i);
            c.colons |= bits(eq(v, colon), 16 * i);
            c.bad |= bits(_mm_or_si128(eq(v, cr), eq(v, nul)), 16 * i);
        }
        c
    }
}

#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "sse2",
        not(miri),
        not(soliton_no_simd)
    ),
    allow(dead_code)
)]
pub(super) mod portable {
    use super::{Classes, BLOCK};

    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);

    /// The high bit of every zero byte of `w`, and no other bit: no carry crosses
    /// a byte, so every bit is exact.
    #[inline(always)]
    const fn zero_bytes(w: u64) -> u64 {
        !((w & LOW7).wrapping_add(LOW7) | w | LOW7)
    }

    /// Bit `i` set for each byte `i` of the little-endian word `w` equal to `c`.
    #[inline(always)]
    const fn eq(w: u64, c: u8) -> u64 {
        let high = zero_bytes(w ^ (LO * c as u64));
        // gather the high bits (7, 15, .., 63) into the low byte
        (high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
    }

    #[inline(always)]
    fn words(block: &[u8; BLOCK]) -> impl Iterator<Item = (usize, u64)> + '_ {
        block
            .as_chunks::<8>()
            .0
            .iter()
            .enumerate()
            .map(|(i, w)| (8 * i, u64::from_le_bytes(*w)))
    }

    pub(super) fn name_bytes(chunk: &[u8; 16]) -> u32 {
        chunk.iter().enumerate().fold(0, |m, (i, &c)| {
            m | ((c.is_ascii_alphanumeric() || c == b'-') as u32) << i
        })
    }

    pub(super) fn equal(block: &[u8; BLOCK], byte: u8) -> u64 {
        words(block).fold(0, |m, (at, w)| m | eq(w, byte) << at)
    }

    pub(super) fn classes(block: &[u8; BLOCK]) -> Classes {
        words(block).fold(
            Classes {
                newlines: 0,
                colons: 0,
                bad: 0,
            },
            |c, (at, w)| Classes {
                newlines: c.newlines | eq(w, b'\n') << at,
                colons: c.colons | eq(w, b':') << at,
                bad: c.bad | (eq(w, b'\r') | eq(w, 0)) << at,
            },
        )
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    use crate::proto::test_rng::Rng;

    #[test]
    fn block_classes_match_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"\n\r\x00: a\x0b\x0c\x80\xff\t-09/`{@[AZaz_\x10\x19\xc1\xda\xed";
        for _ in 0..2_000 {
            let mut block = [0u8; BLOCK];
            for b in block.iter_mut() {
                *b = alphabet[(rng.next() % alphabet.len() as u64) as usize];
            }
            let mask = |f: &dyn Fn(u8) -> bool| {
                block
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (i, &b)| m | (f(b) as u64) << i)
            };
            let expect = Classes {
                newlines: mask(&|b| b == b'\n'),
                colons: mask(&|b| b == b':'),
                bad: mask(&|b| b == b'\r' || b == 0),
            };
            assert_eq!(classes(&block), expect);
            assert_eq!(portable::classes(&block), expect);
            let crs = mask(&|b| b == b'\r');
            for (byte, marks) in [(b'\n', expect.newlines), (b'\r', crs)] {
                assert_eq!(equal(&block, byte), marks);
                assert_eq!(portable::equal(&block, byte), marks);
            }
            for chunk in block.as_chunks::<16>().0 {
                let expect = chunk.iter().enumerate().fold(0u32, |m, (i, &c)| {
                    m | ((c.is_ascii_alphanumeric() || c == b'-') as u32) << i
                });
                assert_eq!(name_bytes(chunk), expect);
                assert_eq!(portable::name_bytes(chunk), expect);
            }
        }
    }
}
