//! Portable masking: the byte-at-a-time oracle and the word-at-a-time fallback.

/// The reference: one byte at a time. `phase` is how many payload bytes before `buf`
/// were already masked with the same key.
pub fn mask_bytewise(buf: &mut [u8], key: [u8; 4], phase: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + phase) & 3];
    }
}

/// Eight bytes at a time through `u64`, no `unsafe`; any length, alignment and phase.
pub fn mask_word(buf: &mut [u8], key: [u8; 4], phase: usize) {
    let key = rotate(key, phase);
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ k8;
        c.copy_from_slice(&w.to_ne_bytes());
    }
    // 8 is a multiple of 4: the tail starts at key phase 0 again
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The key as it applies from a payload offset of `phase`: byte `i` of the result masks
/// the `i`-th byte from that offset.
#[inline]
pub const fn rotate(key: [u8; 4], phase: usize) -> [u8; 4] {
    let p = phase & 3;
    [key[p], key[(p + 1) & 3], key[(p + 2) & 3], key[(p + 3) & 3]]
}
