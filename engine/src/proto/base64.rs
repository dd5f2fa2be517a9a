//! Base64 (RFC 4648, standard alphabet, padded): the two operations the handshake
//! needs, without allocation, and the allocating [`encode`] and [`decode`] the tools
//! (soliton-load's reports, `compare`) use for histograms.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `input` into `out` (which must hold `4 * ceil(len / 3)` bytes), with padding.
pub fn encode_into(input: &[u8], out: &mut [u8]) {
    debug_assert!(out.len() >= input.len().div_ceil(3) * 4);
    let mut o = 0;
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out[o] = ALPHABET[(n >> 18) as usize & 63];
        out[o + 1] = ALPHABET[(n >> 12) as usize & 63];
        out[o + 2] = if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        };
        out[o + 3] = if chunk.len() > 2 {
            ALPHABET[n as usize & 63]
        } else {
            b'='
        };
        o += 4;
    }
}

/// `input` as base64, padded.
pub fn encode(input: &[u8]) -> String {
    let mut out = vec![0u8; input.len().div_ceil(3) * 4];
    encode_into(input, &mut out);
    // every byte written is an ASCII symbol or `=`
    out.into_iter().map(char::from).collect()
}

/// Decodes base64; ASCII whitespace is skipped and decoding stops at the first `=`.
/// `None` on any other byte outside the alphabet.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `IS_SYMBOL[c]`: whether `c` is one of the 64 symbols.
static IS_SYMBOL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `s` is the base64 encoding of exactly 16 bytes: 22 symbols, then `==`.
pub(crate) fn is_16_bytes(s: &[u8]) -> bool {
    s.len() == 24
        && s[22] == b'='
        && s[23] == b'='
        && s[..22]
            .iter()
            .fold(true, |ok, &c| ok & IS_SYMBOL[c as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = vec![0u8; o.len()];
            encode_into(i.as_bytes(), &mut out);
            assert_eq!(out, o.as_bytes());
        }
    }

    #[test]
    fn encode_and_decode_round_trip() {
        for n in 0..20 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&data)).unwrap(), data);
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(decode("aGVs\nbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode("a*"), None);
    }

    #[test]
    fn sixteen_byte_keys() {
        assert!(is_16_bytes(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_16_bytes(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_16_bytes(b"dGhlIHNhbXBsZSBub25j"));
        assert!(!is_16_bytes(b"dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!is_16_bytes(b"Zm9vYmFyZm9vYmFyZm9vYmFyZm9v")); // 21 bytes
    }
}
