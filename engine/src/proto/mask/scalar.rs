//! Portable masking: the byte-at-a-time oracle and the word-at-a-time fallback.

/// The reference: one byte at a time. `phase` is how many payload bytes before `buf`
/// were already masked with the same key.
pub fn mask_bytewise(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + phase) & 3];
    }
}

/// Eight bytes at a time through `u64`, no `unsafe`; any length, alignment and phase.
/// Inlined: a small frame's payload is unmasked with it, once per frame, and the call
/// was a third of its cost there.
#[inline(always)]
pub fn mask_word(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let k4 = rotated_word(key, phase);
    let k8 = (k4 as u64) << 32 | k4 as u64;
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ k8).to_ne_bytes();
    }
    // 8 is a multiple of 4: the tail starts at key phase 0 again; a word of four, then
    // at most three single bytes (small payloads are mostly tail)
    let rest = match tail.split_first_chunk_mut::<4>() {
        Some((four, rest)) => {
            *four = (u32::from_ne_bytes(*four) ^ k4).to_ne_bytes();
            rest
        }
        None => tail,
    };
    for (b, k) in rest.iter_mut().zip(k4.to_ne_bytes()) {
        *b ^= k;
    }
}

/// [`rotate`] as the native-endian word of the rotated key, by a shift.
#[inline(always)]
fn rotated_word(key: [u8; 4], phase: usize) -> u32 {
    let k = u32::from_ne_bytes(key);
    let bits = 8 * (phase as u32 & 3);
    if cfg!(target_endian = "little") {
        k.rotate_right(bits)
    } else {
        k.rotate_left(bits)
    }
}

/// The key as it applies from a payload offset of `phase`: byte `i` of the result masks
/// the `i`-th byte from that offset.
#[inline]
pub const fn rotate(key: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase & 3;
    [key[p], key[(p + 1) & 3], key[(p + 2) & 3], key[(p + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_word_is_rotate() {
        let key = [0x11, 0x22, 0x33, 0x44];
        for phase in 0..8 {
            assert_eq!(rotated_word(key, phase).to_ne_bytes(), rotate(key, phase));
        }
    }
}
